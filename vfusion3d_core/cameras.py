"""The one camera convention of vfusion3d, and conversions to the released VFusion3D camera vectors.

World
    Right-handed, **z up**. Objects are normalized into the box [-1, 1]^3 (see
    ``vfusion3d_core.objects.normalize``), centred at the origin.

Spherical placement
    A camera at azimuth ``a`` and elevation ``e`` (degrees) and distance ``r`` sits at
    ``r * (cos e cos a, cos e sin a, sin e)`` and looks at the origin with world +z as "up".
    Azimuth 0 is the +x axis; azimuth grows counter-clockwise seen from above (+x towards +y).
    Frame ``i`` of an orbit of ``V`` views has azimuth ``start + i * 360 / V``.

Pose
    ``c2w`` [.., 4, 4] is camera-to-world in **OpenGL/Blender camera axes**: columns are the
    camera's right (+x), up (+y) and backward (+z) axes in world coordinates, then its centre.
    The camera looks along its -z axis. The released model's default source camera (azimuth 0,
    elevation 0, distance 1) is exactly ``[[0,0,1,1],[1,0,0,0],[0,1,0,0]]``.

Intrinsics
    ``intrinsics`` [.., 4] = (fx, fy, cx, cy) **normalized** by image width/height, so they do not
    depend on resolution. Defaults fx = fy = 0.75, cx = cy = 0.5. Pixel (row i, col j) of an
    S x S image has normalized coordinates x = (j + 0.5) / S, y = (i + 0.5) / S, and projection
    uses OpenCV axes (x right, y down, z forward) = OpenGL axes times diag(1, -1, -1).

Released VFusion3D vectors
    source vector [.., 16] = flattened 3x4 [R|t] of c2w (OpenGL axes) + (fx, fy, cx, cy)
    render vector [.., 25] = flattened 4x4 c2w (OpenGL axes) + flattened normalized 3x3 K
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_RADIUS = 1.5  # render / turntable distance from the origin
DEFAULT_SOURCE_RADIUS = 1.0  # distance encoded in the released model's default source camera
DEFAULT_FOCAL = 0.75  # normalized fx = fy
DEFAULT_PRINCIPAL = 0.5  # normalized cx = cy
DEFAULT_ORBIT_VIEWS = 16
WORLD_UP = (0.0, 0.0, 1.0)

# OpenGL camera axes -> OpenCV camera axes (flip y and z).
GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass(frozen=True)
class Intrinsics:
    """Normalized pinhole intrinsics; ``fx`` etc. are fractions of the image width/height."""

    fx: float = DEFAULT_FOCAL
    fy: float = DEFAULT_FOCAL
    cx: float = DEFAULT_PRINCIPAL
    cy: float = DEFAULT_PRINCIPAL

    def as_tensor(self, n: int = 1) -> torch.Tensor:
        """[n, 4] tensor of (fx, fy, cx, cy)."""
        return torch.tensor([[self.fx, self.fy, self.cx, self.cy]], dtype=torch.float32).expand(n, 4).clone()


@dataclass
class CameraSet:
    """A batch of cameras in the project convention.

    c2w: [V, 4, 4] camera-to-world, OpenGL axes. intrinsics: [V, 4] normalized (fx, fy, cx, cy).
    azimuth_deg / elevation_deg / radius: [V] spherical placement (for metadata and tests).
    """

    c2w: torch.Tensor
    intrinsics: torch.Tensor
    azimuth_deg: torch.Tensor
    elevation_deg: torch.Tensor
    radius: torch.Tensor

    def __post_init__(self) -> None:
        v = self.c2w.shape[0]
        assert self.c2w.shape == (v, 4, 4), self.c2w.shape
        assert self.intrinsics.shape == (v, 4), self.intrinsics.shape
        for name in ("azimuth_deg", "elevation_deg", "radius"):
            assert getattr(self, name).shape == (v,), (name, getattr(self, name).shape)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def source_vectors(self) -> torch.Tensor:
        """[V, 16] released-model source camera vectors."""
        return to_source_vector(self.c2w, self.intrinsics)

    def render_vectors(self) -> torch.Tensor:
        """[V, 25] released-model render camera vectors."""
        return to_render_vector(self.c2w, self.intrinsics)


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up: tuple[float, float, float] = WORLD_UP
            ) -> torch.Tensor:
    """Camera-to-world [.., 4, 4] (OpenGL axes) of cameras at ``eye`` [.., 3] looking at ``target``.

    Raises ValueError when the viewing direction is parallel to ``up`` (the pose is undefined).
    """
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target, dtype=torch.float32)
    up_t = torch.tensor(up, dtype=torch.float32).expand_as(eye)
    forward = target - eye
    forward = forward / forward.norm(dim=-1, keepdim=True)
    right = torch.linalg.cross(forward, up_t, dim=-1)
    norm = right.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-6).any()):
        raise ValueError("look_at: viewing direction is parallel to the up vector (elevation of +-90 deg)")
    right = right / norm
    cam_up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=torch.float32)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = cam_up
    c2w[..., :3, 2] = -forward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def spherical_to_position(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor, radius: torch.Tensor
                          ) -> torch.Tensor:
    """[V, 3] camera centres for spherical coordinates (degrees), per the convention above."""
    a = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float32))
    e = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float32))
    r = torch.as_tensor(radius, dtype=torch.float32)
    return torch.stack([r * torch.cos(e) * torch.cos(a), r * torch.cos(e) * torch.sin(a), r * torch.sin(e)], -1)


def spherical_cameras(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor, radius: torch.Tensor | float,
                      intrinsics: Intrinsics = Intrinsics()) -> CameraSet:
    """Cameras at the given spherical coordinates, all looking at the origin."""
    az = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1)
    el = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1).expand_as(az).clone()
    r = torch.as_tensor(radius, dtype=torch.float32).reshape(-1).expand_as(az).clone()
    if bool((el.abs() >= 90.0).any()):
        raise ValueError(f"elevation must lie strictly inside (-90, 90) degrees, got {el.tolist()}")
    c2w = look_at(spherical_to_position(az, el, r))
    return CameraSet(c2w, intrinsics.as_tensor(len(az)), az, el, r)


def orbit_cameras(num_views: int = DEFAULT_ORBIT_VIEWS, elevation_deg: float | None = None,
                  elevation_range_deg: tuple[float, float] = (0.0, 45.0), radius: float = DEFAULT_RADIUS,
                  azimuth_start_deg: float = 0.0, intrinsics: Intrinsics = Intrinsics(),
                  generator: torch.Generator | None = None) -> CameraSet:
    """An orbit of ``num_views`` cameras at one elevation, azimuth evenly spaced over 360 degrees.

    The elevation is ``elevation_deg`` when given, else drawn uniformly from ``elevation_range_deg``
    (VFusion3D renders use [0, 45]). Frame i has azimuth ``azimuth_start_deg + i * 360 / num_views``.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if elevation_deg is None:
        lo, hi = elevation_range_deg
        elevation_deg = lo + (hi - lo) * torch.rand((), generator=generator).item()
    az = azimuth_start_deg + torch.arange(num_views, dtype=torch.float32) * (360.0 / num_views)
    return spherical_cameras(az % 360.0, torch.full((num_views,), float(elevation_deg)), radius, intrinsics)


def random_cameras(num_views: int, elevation_range_deg: tuple[float, float] = (-10.0, 60.0),
                   radius_range: tuple[float, float] = (DEFAULT_RADIUS, DEFAULT_RADIUS),
                   intrinsics: Intrinsics = Intrinsics(), generator: torch.Generator | None = None) -> CameraSet:
    """``num_views`` cameras at uniform random azimuth, elevation and radius, looking at the origin."""
    az = torch.rand(num_views, generator=generator) * 360.0
    lo, hi = elevation_range_deg
    el = lo + (hi - lo) * torch.rand(num_views, generator=generator)
    rlo, rhi = radius_range
    r = rlo + (rhi - rlo) * torch.rand(num_views, generator=generator)
    return spherical_cameras(az, el, r, intrinsics)


def default_source_camera(radius: float = DEFAULT_SOURCE_RADIUS, intrinsics: Intrinsics = Intrinsics()
                          ) -> torch.Tensor:
    """[16] source vector of the released model's canonical input view (azimuth 0, elevation 0)."""
    cams = spherical_cameras(torch.zeros(1), torch.zeros(1), radius, intrinsics)
    return cams.source_vectors()[0]


def turntable_cameras(num_views: int = 160, elevation_deg: float = 0.0, radius: float = DEFAULT_RADIUS,
                      intrinsics: Intrinsics = Intrinsics()) -> CameraSet:
    """Output turntable: the released model's default (radius 1.5, elevation 0, world up +z)."""
    return orbit_cameras(num_views, elevation_deg=elevation_deg, radius=radius, intrinsics=intrinsics)


# --- intrinsics matrices ----------------------------------------------------------------------------

def intrinsics_to_matrix(intrinsics: torch.Tensor) -> torch.Tensor:
    """[.., 4] (fx, fy, cx, cy) -> [.., 3, 3] normalized K."""
    fx, fy, cx, cy = intrinsics.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one], -1).reshape(*fx.shape, 3, 3)


def matrix_to_intrinsics(k: torch.Tensor) -> torch.Tensor:
    """[.., 3, 3] normalized K -> [.., 4] (fx, fy, cx, cy)."""
    return torch.stack([k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2]], -1)


# --- released-model vectors ---------------------------------------------------------------------------

def to_source_vector(c2w: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """c2w [.., 4, 4] (OpenGL) + intrinsics [.., 4] -> source vector [.., 16]."""
    assert c2w.shape[-2:] == (4, 4) and intrinsics.shape[-1] == 4, (c2w.shape, intrinsics.shape)
    return torch.cat([c2w[..., :3, :4].flatten(-2), intrinsics], -1)


def from_source_vector(vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """source vector [.., 16] -> (c2w [.., 4, 4], intrinsics [.., 4])."""
    assert vec.shape[-1] == 16, vec.shape
    c2w = torch.zeros(*vec.shape[:-1], 4, 4, dtype=vec.dtype, device=vec.device)
    c2w[..., :3, :4] = vec[..., :12].reshape(*vec.shape[:-1], 3, 4)
    c2w[..., 3, 3] = 1.0
    return c2w, vec[..., 12:16]


def to_render_vector(c2w: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """c2w [.., 4, 4] (OpenGL) + intrinsics [.., 4] -> render vector [.., 25]."""
    assert c2w.shape[-2:] == (4, 4) and intrinsics.shape[-1] == 4, (c2w.shape, intrinsics.shape)
    return torch.cat([c2w.flatten(-2), intrinsics_to_matrix(intrinsics).flatten(-2)], -1)


def from_render_vector(vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """render vector [.., 25] -> (c2w [.., 4, 4], intrinsics [.., 4])."""
    assert vec.shape[-1] == 25, vec.shape
    c2w = vec[..., :16].reshape(*vec.shape[:-1], 4, 4)
    return c2w, matrix_to_intrinsics(vec[..., 16:25].reshape(*vec.shape[:-1], 3, 3))


def source_to_render_vector(vec: torch.Tensor) -> torch.Tensor:
    """source vector [.., 16] -> render vector [.., 25] of the same camera."""
    return to_render_vector(*from_source_vector(vec))


# --- projection and rays ------------------------------------------------------------------------------

def world_to_camera_cv(c2w: torch.Tensor) -> torch.Tensor:
    """[.., 4, 4] world-to-camera in OpenCV axes (x right, y down, z forward)."""
    return GL_TO_CV.to(c2w) @ torch.linalg.inv(c2w)


def project_points(points: torch.Tensor, c2w: torch.Tensor, intrinsics: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points [.., P, 3] with cameras c2w [.., 4, 4], intrinsics [.., 4].

    Returns (uv [.., P, 2] normalized image coords, x = column, y = row, in [0, 1] inside the image;
    depth [.., P] along the optical axis, positive in front of the camera).
    """
    w2c = world_to_camera_cv(c2w)
    homog = torch.cat([points, torch.ones_like(points[..., :1])], -1)
    cam = homog @ w2c.transpose(-1, -2)
    z = cam[..., 2]
    fx, fy, cx, cy = (intrinsics[..., i, None] for i in range(4))
    uv = torch.stack([fx * cam[..., 0] / z + cx, fy * cam[..., 1] / z + cy], -1)
    return uv, z


def pixel_grid(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """[size, size, 2] normalized pixel-centre coordinates (x = (j + 0.5) / S, y = (i + 0.5) / S).

    Computed in the released model's float32 order, ``j * (1 / S) + 0.5 / S`` (not ``(j + 0.5) / S``,
    which differs in the last bit for some pixels; see ``rays_from_cameras``).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    c = torch.arange(size, dtype=torch.float32, device=device) * (1.0 / size) + (0.5 / size)
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x, y], -1)


def rays_from_cameras(c2w: torch.Tensor, intrinsics: torch.Tensor, size: int,
                      crop: tuple[int, int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel rays for an S x S render.

    c2w [N, 4, 4] (OpenGL), intrinsics [N, 4]. ``crop`` = (top, left, height, width) selects a patch
    of the full S x S pixel grid. Returns origins and unit directions, each [N, H, W, 3].

    The float32 operation order is the released model's, bit for bit (the last coarse sample of a
    ray lies on the box's exit face, so its inside/outside test depends on the last bit of the ray):
    x' = (x - cx) / fx, y' = (y - cy) / fy; the OpenCV-axes cam-to-world ``c2w @ diag(1, -1, -1, 1)``
    maps the homogeneous point (x', y', 1, 1) to the world by one 4x4 ``bmm`` over the full pixel
    grid; the direction is that point minus the camera centre, normalized with ``F.normalize``.
    Rotating (x', y', 1) with the 3x3 block instead flips the exit sample of ~6-7% of rays.
    """
    if c2w.dim() != 3 or c2w.shape[-2:] != (4, 4) or intrinsics.shape != (c2w.shape[0], 4):
        raise ValueError(f"expected c2w [N, 4, 4] and intrinsics [N, 4], got {tuple(c2w.shape)} and "
                         f"{tuple(intrinsics.shape)}")
    n = c2w.shape[0]
    c2w = c2w.float()
    intrinsics = intrinsics.float()
    grid = pixel_grid(size, c2w.device).reshape(1, size * size, 2)  # [1, S*S, 2] (x, y)
    fx, fy, cx, cy = (intrinsics[:, i, None] for i in range(4))  # [N, 1] each
    x_cam = (grid[..., 0] - cx) / fx  # [N, S*S]
    y_cam = (grid[..., 1] - cy) / fy
    ones = torch.ones_like(x_cam)
    homog = torch.stack([x_cam, y_cam, ones, ones], dim=1)  # [N, 4, S*S]
    c2w_cv = c2w @ GL_TO_CV.to(c2w)
    world = torch.bmm(c2w_cv, homog).permute(0, 2, 1)[..., :3]  # [N, S*S, 3]
    centre = c2w_cv[:, :3, 3]  # [N, 3]
    dirs = torch.nn.functional.normalize(world - centre[:, None, :], dim=-1).reshape(n, size, size, 3)
    if crop is not None:
        top, left, h, w = crop
        if top < 0 or left < 0 or h < 1 or w < 1 or top + h > size or left + w > size:
            raise ValueError(f"crop {crop} does not fit a {size} x {size} image")
        dirs = dirs[:, top:top + h, left:left + w]
    origins = centre[:, None, None, :].expand_as(dirs)
    return origins, dirs
