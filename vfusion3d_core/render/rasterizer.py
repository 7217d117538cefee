"""OpenGL rasterizer on a headless EGL context (Mesa llvmpipe on CPU, the GPU driver where present).

Produces straight (non-premultiplied) RGBA with alpha = pixel coverage, from 4x multisampling.
The projection follows the camera convention of ``vfusion3d_core.cameras`` exactly: a world point
projects to the same pixel here as in ``cameras.project_points``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from vfusion3d_core.objects.mesh import ColoredMesh

VERTEX_SHADER = """
#version 330
uniform mat4 world_to_clip;
in vec3 in_position;
in vec3 in_normal;
in vec3 in_color;
in float in_specular;
in vec2 in_uv;
out vec3 v_position;
out vec3 v_normal;
out vec3 v_color;
out float v_specular;
out vec2 v_uv;
void main() {
    v_position = in_position;
    v_normal = in_normal;
    v_color = in_color;
    v_specular = in_specular;
    v_uv = in_uv;
    gl_Position = world_to_clip * vec4(in_position, 1.0);
}
"""

# Two directional lights fixed relative to the camera (key from upper left, fill from the right) and
# ambient: every view of an object is lit the same way, as in turntable captures. The base colour is the vertex
# colour times the base-colour texture sampled per fragment (a 1x1 white texture for untextured faces, so their
# colour is exactly the vertex colour); texels with alpha below alpha_cutoff are discarded (glTF alphaMode MASK).
FRAGMENT_SHADER = """
#version 330
uniform vec3 camera_position;
uniform vec3 key_light;
uniform vec3 fill_light;
uniform sampler2D base_color;
uniform float alpha_cutoff;
in vec3 v_position;
in vec3 v_normal;
in vec3 v_color;
in float v_specular;
in vec2 v_uv;
out vec4 f_color;
void main() {
    vec4 texel = texture(base_color, v_uv);
    if (texel.a < alpha_cutoff) discard;
    vec3 n = normalize(v_normal);
    vec3 view = normalize(camera_position - v_position);
    if (dot(n, view) < 0.0) n = -n;  // two-sided lighting for open meshes
    float diffuse = 0.35 + 0.5 * max(dot(n, key_light), 0.0) + 0.25 * max(dot(n, fill_light), 0.0);
    vec3 h = normalize(key_light + view);
    float spec = v_specular * pow(max(dot(n, h), 0.0), 32.0);
    vec3 color = v_color * texel.rgb * diffuse * (1.0 - 0.5 * v_specular) + vec3(spec);
    f_color = vec4(clamp(color, 0.0, 1.0), 1.0);
}
"""


class RendererUnavailable(RuntimeError):
    """No headless OpenGL context could be created (missing EGL/Mesa libraries)."""


def opengl_projection(intrinsics: np.ndarray, near: float, far: float) -> np.ndarray:
    """[4, 4] OpenGL projection for normalized (fx, fy, cx, cy), image row 0 at the top.

    x_ndc = 2 u - 1 and y_ndc = 1 - 2 v, with (u, v) the normalized pixel coordinates of cameras.py.
    """
    fx, fy, cx, cy = (float(x) for x in intrinsics)
    return np.array([
        [2 * fx, 0, 1 - 2 * cx, 0],
        [0, 2 * fy, 2 * cy - 1, 0],
        [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, -1, 0],
    ], dtype=np.float64)


def _load_triton_first() -> None:
    """Import triton (when installed) before the first GL context: Mesa's llvmpipe and triton each load their own
    LLVM, and triton imported after a context has rendered crashes the process (a segmentation fault in
    ``triton.knobs``). Code that renders and later imports transformers / ``torch._dynamo`` in the same process
    (a renders_3d run followed by a check or another asset, a test session) would otherwise depend on import
    order."""
    with contextlib.suppress(ImportError):
        import triton  # noqa: F401


class MeshRasterizer:
    """Renders ColoredMeshes from many cameras; one GL context, reused across calls.

    The context is created lazily on first use so importing this module never touches OpenGL.
    """

    def __init__(self, samples: int = 4, backend: str = "egl") -> None:
        self.samples = samples
        self.backend = backend
        self._ctx = None
        self._program = None
        self._fbos: dict[int, tuple] = {}

    def _context(self):
        if self._ctx is None:
            import moderngl

            _load_triton_first()
            try:
                self._ctx = moderngl.create_context(standalone=True, backend=self.backend)
            except Exception as exc:
                raise RendererUnavailable(
                    f"cannot create a headless OpenGL context ({self.backend}): {exc}. On Debian/Ubuntu install "
                    "libegl1 libegl-mesa0 libgl1-mesa-dri (scripts/setup.sh does this)."
                ) from exc
            self._program = self._ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
            self._ctx.enable(moderngl.DEPTH_TEST)
        return self._ctx

    def _framebuffers(self, size: int):
        if size not in self._fbos:
            ctx = self._ctx
            samples = min(self.samples, ctx.max_samples)
            msaa = ctx.framebuffer(ctx.renderbuffer((size, size), 4, samples=samples),
                                   ctx.depth_renderbuffer((size, size), samples=samples))
            resolved = ctx.framebuffer(ctx.renderbuffer((size, size), 4))
            self._fbos[size] = (msaa, resolved)
        return self._fbos[size]

    def render(self, mesh: ColoredMesh, c2w: torch.Tensor, intrinsics: torch.Tensor, size: int) -> np.ndarray:
        """Render ``mesh`` from cameras c2w [V, 4, 4] (OpenGL axes), intrinsics [V, 4].

        Faces are drawn grouped by base-colour texture. Returns uint8 RGBA [V, size, size, 4], row 0 at the top,
        straight alpha = coverage.
        """
        if c2w.dim() != 3 or c2w.shape[1:] != (4, 4) or intrinsics.shape != (c2w.shape[0], 4):
            raise ValueError(f"expected c2w [V, 4, 4] and intrinsics [V, 4], got {tuple(c2w.shape)}, "
                             f"{tuple(intrinsics.shape)}")
        ctx = self._context()
        prog = self._program
        uvs = mesh.uvs if mesh.uvs is not None else np.zeros((len(mesh.vertices), 2), np.float32)
        data = np.concatenate([mesh.vertices, mesh.normals, mesh.colors, mesh.specular[:, None], uvs], 1)
        vbo = ctx.buffer(np.ascontiguousarray(data, dtype="f4").tobytes())
        faces, groups = _faces_by_texture(mesh)
        ibo = ctx.buffer(np.ascontiguousarray(faces, dtype="i4").tobytes())
        vao = ctx.vertex_array(prog, [(vbo, "3f 3f 3f 1f 2f", "in_position", "in_normal", "in_color", "in_specular",
                                       "in_uv")], index_buffer=ibo)
        textures: list = []  # index 0: the 1x1 white texture of untextured faces, then mesh.textures
        cutoffs = [0.0] + [float(c) for c in mesh.alpha_cutoff]
        prog["base_color"].value = 0  # texture unit 0
        msaa, resolved = self._framebuffers(size)
        out = np.empty((c2w.shape[0], size, size, 4), np.uint8)
        c2w_np = c2w.detach().cpu().double().numpy()
        intr_np = intrinsics.detach().cpu().double().numpy()
        try:
            for image in [np.full((1, 1, 4), 255, np.uint8), *mesh.textures]:
                textures.append(self._texture(image))
            for v in range(c2w.shape[0]):
                pose = c2w_np[v]
                dist = float(np.linalg.norm(pose[:3, 3]))
                near, far = max(dist - 2.0, 0.01), dist + 2.0  # the object lies inside the unit sphere
                world_to_clip = opengl_projection(intr_np[v], near, far) @ np.linalg.inv(pose)
                prog["world_to_clip"].write(world_to_clip.T.astype("f4").tobytes())  # column-major
                prog["camera_position"].value = tuple(pose[:3, 3])
                right, up, back = pose[:3, 0], pose[:3, 1], pose[:3, 2]
                prog["key_light"].value = tuple(_unit(back + 0.6 * up - 0.5 * right))
                prog["fill_light"].value = tuple(_unit(back - 0.2 * up + 0.8 * right))
                msaa.use()
                msaa.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
                for texture_index, first, count in groups:  # one draw per texture (index -1 = untextured)
                    textures[texture_index + 1].use(0)
                    prog["alpha_cutoff"].value = cutoffs[texture_index + 1]
                    vao.render(vertices=count, first=first)
                ctx.copy_framebuffer(resolved, msaa)
                raw = np.frombuffer(resolved.read(components=4, alignment=1), np.uint8).reshape(size, size, 4)
                out[v] = _unpremultiply(raw[::-1])
        finally:
            vao.release()
            vbo.release()
            ibo.release()
            for texture in textures:
                texture.release()
        return out

    def _texture(self, image: np.ndarray):
        """A mipmapped, anisotropically filtered, repeating GL texture from [H, W, 4] uint8 RGBA (row 0 = image top)."""
        import moderngl

        height, width = image.shape[:2]
        # GL's first row is t = 0, the bottom of the image in the OpenGL UV convention: upload bottom row first
        texture = self._ctx.texture((width, height), 4, np.ascontiguousarray(image[::-1]).tobytes(), alignment=1)
        texture.repeat_x = texture.repeat_y = True
        texture.build_mipmaps()
        texture.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
        texture.anisotropy = 16.0  # keeps faces seen at grazing angles sharp (clamped to what the driver has)
        return texture

    def release(self) -> None:
        """Free the GL context and its framebuffers."""
        for msaa, resolved in self._fbos.values():
            msaa.release()
            resolved.release()
        self._fbos.clear()
        if self._ctx is not None:
            self._ctx.release()
            self._ctx = None


def _faces_by_texture(mesh: ColoredMesh) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Faces [F, 3] sorted by texture and the draw groups (texture index, first index, index count)."""
    if mesh.face_texture is None or not mesh.textures:
        return mesh.faces, [(-1, 0, 3 * len(mesh.faces))]
    order = np.argsort(mesh.face_texture, kind="stable")  # stable: faces keep their order within a texture
    keys, starts, counts = np.unique(mesh.face_texture[order], return_index=True, return_counts=True)
    groups = [(int(k), 3 * int(s), 3 * int(c)) for k, s, c in zip(keys, starts, counts, strict=True)]
    return mesh.faces[order], groups


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _unpremultiply(rgba: np.ndarray) -> np.ndarray:
    """Multisample resolve averages black background into edge colours; divide it back out."""
    alpha = rgba[..., 3:4].astype(np.float32)
    rgb = rgba[..., :3].astype(np.float32) * 255.0 / np.maximum(alpha, 1.0)
    out = np.concatenate([np.clip(np.round(rgb), 0, 255), alpha], -1).astype(np.uint8)
    out[..., :3][rgba[..., 3] == 0] = 0
    return out
