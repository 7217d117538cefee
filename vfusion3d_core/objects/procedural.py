"""A seeded procedural world: compound objects of coloured, textured primitives, each with a caption.

An object is 1-3 parts. A part is a primitive kind (box, sphere, torus, ...) with a colour and a
material (matte, glossy, metallic, checkered, striped, dotted); parts are placed by an arrangement
("on", "next to", "under", "between", "in front of" ...). The caption names all of it, e.g.
"a glossy red torus on a checkered blue box". The combination space is large (~10^9), so objects
drawn with other seeds are genuinely new combinations; ``split_train_heldout`` enforces that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import trimesh

from vfusion3d_core.objects.mesh import ColoredMesh, normalize_into_box

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10), "orange": (0.95, 0.50, 0.08), "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.65, 0.20), "teal": (0.05, 0.55, 0.55), "blue": (0.12, 0.25, 0.85),
    "purple": (0.50, 0.20, 0.70), "pink": (0.95, 0.50, 0.70), "brown": (0.50, 0.30, 0.12),
    "white": (0.92, 0.92, 0.90), "gray": (0.50, 0.50, 0.52), "black": (0.08, 0.08, 0.09),
}
# material -> (specular strength, pattern); patterns are baked into per-face colours.
MATERIALS: dict[str, tuple[float, str | None]] = {
    "matte": (0.0, None), "glossy": (0.6, None), "metallic": (0.9, None),
    "checkered": (0.1, "checker"), "striped": (0.1, "stripes"), "dotted": (0.1, "dots"),
}
KINDS = ("box", "sphere", "cylinder", "cone", "torus", "capsule", "pyramid", "ring")
ARRANGEMENTS_2 = ("on", "next to", "under", "in front of", "behind")
ARRANGEMENTS_3 = ("stacked", "in a row", "between")


@dataclass(frozen=True)
class PartSpec:
    kind: str
    color: str
    material: str

    def phrase(self) -> str:
        adjective = "" if self.material == "matte" else f"{self.material} "
        return f"{adjective}{self.color} {self.kind}"


@dataclass(frozen=True)
class ObjectSpec:
    """A full description of one procedural object; ``signature`` identifies the combination."""

    parts: tuple[PartSpec, ...]
    arrangement: str  # "single" for one part

    @property
    def caption(self) -> str:
        p = [x.phrase() for x in self.parts]
        if self.arrangement == "single":
            return f"a {p[0]}"
        if len(p) == 2:
            return f"a {p[0]} {self.arrangement} a {p[1]}"
        if self.arrangement == "between":
            return f"a {p[0]} between a {p[1]} and a {p[2]}"
        return f"a {p[0]}, a {p[1]} and a {p[2]} {self.arrangement}"

    @property
    def signature(self) -> str:
        return self.caption


def _primitive(kind: str, rng: np.random.Generator) -> trimesh.Trimesh:
    """A unit-ish primitive centred at the origin, z up, with slightly random proportions."""
    s = rng.uniform(0.8, 1.2, size=3)
    if kind == "box":
        m = trimesh.creation.box(extents=(0.9 * s[0], 0.9 * s[1], 0.9 * s[2]))
    elif kind == "sphere":
        m = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    elif kind == "cylinder":
        m = trimesh.creation.cylinder(radius=0.4 * s[0], height=0.9 * s[2], sections=32)
    elif kind == "cone":
        m = trimesh.creation.cone(radius=0.45 * s[0], height=0.9 * s[2], sections=32)
        m.apply_translation((0, 0, -0.45 * s[2]))
    elif kind == "torus":
        m = trimesh.creation.torus(major_radius=0.4, minor_radius=0.14 * s[0], major_sections=40, minor_sections=16)
    elif kind == "capsule":
        m = trimesh.creation.capsule(height=0.6 * s[2], radius=0.25 * s[0], count=(24, 24))
        m.apply_translation((0, 0, -0.3 * s[2]))
    elif kind == "pyramid":
        m = trimesh.creation.cone(radius=0.55 * s[0], height=0.8 * s[2], sections=4)
        m.apply_translation((0, 0, -0.4 * s[2]))
    elif kind == "ring":
        m = trimesh.creation.annulus(r_min=0.25, r_max=0.45 * s[0], height=0.2 * s[2], sections=40)
    else:
        raise ValueError(f"unknown primitive kind {kind!r}")
    m.apply_translation(-m.bounds.mean(0))
    return m


def _pattern_mask(kind: str, centers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[F] bool: faces that take the secondary colour of a pattern."""
    freq = rng.uniform(5.0, 8.0)
    if kind == "checker":
        idx = np.floor(centers * freq).astype(int)
        return (idx.sum(1) % 2) == 0
    if kind == "stripes":
        return (np.floor(centers[:, 2] * freq * 1.5).astype(int) % 2) == 0
    if kind == "dots":
        cell = centers * freq
        return np.linalg.norm(cell - np.round(cell), axis=1) < 0.3
    raise ValueError(kind)


def _build_part(spec: PartSpec, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Vertices, faces, colours, normals, specular of one part (unwelded per face when patterned)."""
    mesh = _primitive(spec.kind, rng)
    specular, pattern = MATERIALS[spec.material]
    base = np.asarray(COLORS[spec.color], np.float32)
    if pattern is None:
        colors = np.tile(base, (len(mesh.vertices), 1))
        # slight per-vertex shading variation so untextured parts are not perfectly flat in colour
        colors = np.clip(colors * rng.uniform(0.95, 1.05), 0, 1)
        return (mesh.vertices, mesh.faces, colors, mesh.vertex_normals, np.full(len(mesh.vertices), specular))
    mesh = mesh.subdivide_to_size(0.06, max_iter=6)
    normals = mesh.vertex_normals[mesh.faces].reshape(-1, 3)  # keep smooth normals after unwelding
    secondary = np.asarray(COLORS["white" if spec.color != "white" else "black"], np.float32)
    mask = _pattern_mask(pattern, mesh.triangles_center, rng)
    face_colors = np.where(mask[:, None], secondary, base)
    vertices = mesh.vertices[mesh.faces].reshape(-1, 3)
    faces = np.arange(len(vertices)).reshape(-1, 3)
    colors = np.repeat(face_colors, 3, axis=0)
    return vertices, faces, colors, normals, np.full(len(vertices), specular)


def _offsets(arrangement: str, heights: list[float], widths: list[float]) -> list[np.ndarray]:
    """Translations that place parts according to an arrangement (z up; +x towards azimuth 0)."""
    if arrangement == "single":
        return [np.zeros(3)]
    if arrangement == "on":  # part 0 sits on part 1
        return [np.array([0, 0, (heights[0] + heights[1]) / 2]), np.zeros(3)]
    if arrangement == "under":
        return [np.zeros(3), np.array([0, 0, (heights[0] + heights[1]) / 2])]
    if arrangement == "next to":
        return [np.array([0, -(widths[0] + widths[1]) / 2 - 0.05, 0]), np.zeros(3)]
    if arrangement == "in front of":
        return [np.array([(widths[0] + widths[1]) / 2 + 0.05, 0, 0]), np.zeros(3)]
    if arrangement == "behind":
        return [np.array([-(widths[0] + widths[1]) / 2 - 0.05, 0, 0]), np.zeros(3)]
    if arrangement == "stacked":
        z = [0.0, (heights[0] + heights[1]) / 2, (heights[0] + heights[1]) / 2 + (heights[1] + heights[2]) / 2]
        return [np.array([0, 0, -v]) for v in z]  # first named part on top
    if arrangement == "in a row":
        y0 = (widths[0] + widths[1]) / 2 + 0.05
        y2 = (widths[1] + widths[2]) / 2 + 0.05
        return [np.array([0, -y0, 0]), np.zeros(3), np.array([0, y2, 0])]
    if arrangement == "between":  # part 0 in the middle
        y1 = (widths[0] + widths[1]) / 2 + 0.05
        y2 = (widths[0] + widths[2]) / 2 + 0.05
        return [np.zeros(3), np.array([0, -y1, 0]), np.array([0, y2, 0])]
    raise ValueError(f"unknown arrangement {arrangement!r}")


def build_object(spec: ObjectSpec, uid: str, rng: np.random.Generator) -> ColoredMesh:
    """Build, assemble and normalize the mesh of ``spec``."""
    parts = [_build_part(p, rng) for p in spec.parts]
    extents = [np.ptp(p[0], axis=0) for p in parts]
    offsets = _offsets(spec.arrangement, [e[2] for e in extents], [e[1] for e in extents])
    vertices, faces, colors, normals, specular = [], [], [], [], []
    base = 0
    for (v, f, c, n, s), off in zip(parts, offsets, strict=True):
        vertices.append(v + off)
        faces.append(f + base)
        colors.append(c)
        normals.append(n)
        specular.append(s)
        base += len(v)
    mesh = ColoredMesh(uid, spec.caption, np.concatenate(vertices).astype(np.float32),
                       np.concatenate(faces).astype(np.int32), np.concatenate(colors).astype(np.float32),
                       np.concatenate(normals).astype(np.float32), np.concatenate(specular).astype(np.float32),
                       meta={"source": "procedural", "signature": spec.signature})
    return normalize_into_box(mesh)


class ProceduralObjectGenerator:
    """Seeded stream of procedural objects; the same seed always yields the same objects."""

    def __init__(self, seed: int = 0, max_parts: int = 3) -> None:
        if not 1 <= max_parts <= 3:
            raise ValueError("max_parts must be 1, 2 or 3")
        self.seed = seed
        self.max_parts = max_parts

    def spec(self, index: int) -> ObjectSpec:
        """The description of object ``index`` (cheap; no geometry)."""
        rng = np.random.default_rng([self.seed, index, 0])
        n_parts = int(rng.choice([1, 2, 3][: self.max_parts], p=[0.25, 0.5, 0.25][: self.max_parts]
                                 / np.sum([0.25, 0.5, 0.25][: self.max_parts])))
        parts = tuple(PartSpec(str(rng.choice(KINDS)), str(rng.choice(list(COLORS))), str(rng.choice(list(MATERIALS))))
                      for _ in range(n_parts))
        arrangement = {1: "single", 2: None, 3: None}[n_parts] or str(
            rng.choice(ARRANGEMENTS_2 if n_parts == 2 else ARRANGEMENTS_3))
        return ObjectSpec(parts, arrangement)

    def uid(self, index: int) -> str:
        digest = hashlib.sha1(f"{self.seed}:{index}:{self.spec(index).signature}".encode()).hexdigest()[:10]
        return f"proc-{self.seed}-{index:06d}-{digest}"

    def build(self, index: int) -> ColoredMesh:
        """The mesh of object ``index``."""
        return build_object(self.spec(index), self.uid(index), np.random.default_rng([self.seed, index, 1]))

    def __iter__(self) -> Iterator[ColoredMesh]:
        index = 0
        while True:
            yield self.build(index)
            index += 1


def split_train_heldout(generator: ProceduralObjectGenerator, num_train: int, num_heldout: int
                        ) -> tuple[list[int], list[int]]:
    """Indices of ``num_train`` training objects and ``num_heldout`` held-out objects.

    Held-out objects are drawn after the training ones and skipped when their combination
    (caption signature) already occurs in the training set, so they are genuinely new.
    """
    train = list(range(num_train))
    seen = {generator.spec(i).signature for i in train}
    heldout: list[int] = []
    index = num_train
    while len(heldout) < num_heldout:
        sig = generator.spec(index).signature
        if sig not in seen:
            heldout.append(index)
            seen.add(sig)
        index += 1
        if index > num_train + 100 * (num_heldout + 1):
            raise RuntimeError("could not find enough new combinations for the held-out set")
    return train, heldout
