"""Fast-inference options: compute dtype, empty-space skipping, coarse-to-fine meshing, memory budget.

``InferenceOptions()`` is the fast path (what ``vfusion3d generate`` uses by default);
``InferenceOptions.exact()`` — or passing no options at all — is the exact fp32 path, which is
bit-for-bit the reference implementation (``LRM.render`` / ``extract_mesh`` without options).

Memory: ``max_memory_gb`` bounds the whole process (CPU: resident set; GPU: allocated memory).
Chunk sizes are derived from the part of it not yet in use (model weights, planes, ...) and from
what the machine still has available, see ``working_memory_bytes``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vfusion3d_core.compute import fast_bf16

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}
MIN_WORKING_BYTES = 64 << 20  # never plan chunks below 64 MiB, whatever the budget says
CPU_FIELD_CHUNK = 1 << 16  # fused-field points per call on CPU: larger chunks fall out of cache (measured)


@dataclass(frozen=True)
class InferenceOptions:
    """Switches of the fast inference path.

    dtype: compute dtype of encode (autocast): "auto" (bf16 where the device has fast bf16 matmuls:
      AMX / AVX512-BF16 CPUs, GPUs with bf16 tensor cores; else fp32), "bfloat16" or "float32".
    field_dtype: the same choice for the decoder field used by rendering (bf16 projected planes +
      MLP; sampling and compositing stay fp32).
    mesh_dtype: the decoder field's dtype for meshing. Default fp32: bf16 rounding of a sharp
      density puts small islands and bumps on the iso-surface (measured in docs/lrm.md).
    fused_field: decoder's first layer folded into the planes (a 12-tap weighted gather instead of
      ``grid_sample`` + a 3C x hidden matmul; exact algebra, different rounding).
    skip_empty: empty-space skipping (see ``fast_render``): fine (importance) samples that land in
      an interval whose coarse weight, max-pooled over the neighbouring intervals, is below
      ``weight_eps`` are not evaluated (raw density and colour are linearly interpolated from the
      two enclosing coarse samples); with ``occupancy_resolution`` > 0, samples in cells of an
      occupancy grid (that resolution, built once per planes) whose corner densities are all below
      ``density_eps`` (dilated by one cell) are answered by the grid instead of the decoder.
    mesh_stride: coarse-to-fine meshing evaluates a grid ``mesh_stride`` times coarser first and the
      full grid only in coarse cells (dilated by ``mesh_dilate``) whose corner densities straddle
      the level; 0 or 1 evaluates the dense grid.
    max_memory_gb: process memory bound used to size chunks (rays, points, grid slabs).
    """

    dtype: str = "auto"
    field_dtype: str = "auto"
    mesh_dtype: str = "float32"
    fused_field: bool = True
    skip_empty: bool = True
    weight_eps: float = 1e-4
    occupancy_resolution: int = 64
    density_eps: float = 1e-3
    mesh_stride: int = 4
    mesh_dilate: int = 1
    max_memory_gb: float = 4.0

    def __post_init__(self) -> None:
        for value in (self.dtype, self.field_dtype, self.mesh_dtype):
            if value not in DTYPES:
                raise ValueError(f"unknown dtype {value!r}; use one of {tuple(DTYPES)}")
        if min(self.weight_eps, self.density_eps, self.occupancy_resolution, self.mesh_stride,
               self.mesh_dilate) < 0 or self.max_memory_gb <= 0:
            raise ValueError(f"invalid InferenceOptions: {self}")

    @classmethod
    def exact(cls, max_memory_gb: float = 4.0) -> InferenceOptions:
        """fp32, unfused field, no skipping, dense mesh grid: the reference path. The memory bound only
        sets chunk sizes (results may differ from other chunkings by float rounding of the batched
        matmuls; ``LRM.render`` without options uses the fixed default chunking)."""
        return cls(dtype="float32", field_dtype="float32", mesh_dtype="float32", fused_field=False,
                   skip_empty=False, mesh_stride=0, max_memory_gb=max_memory_gb)

    @property
    def is_exact(self) -> bool:
        """True when every switch is on its reference setting."""
        return (self.dtype == self.field_dtype == self.mesh_dtype == "float32" and not self.fused_field
                and not self.skip_empty and self.mesh_stride <= 1)

    def replace(self, **changes) -> InferenceOptions:
        """Copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def compute_dtype(self, device: torch.device | str, part: str = "encode") -> torch.dtype:
        """The dtype ``part`` ("encode", "field" or "mesh") computes in on ``device``."""
        chosen = DTYPES[{"encode": self.dtype, "field": self.field_dtype, "mesh": self.mesh_dtype}[part]]
        if chosen is None:
            return torch.bfloat16 if fast_bf16(torch.device(device)) else torch.float32
        return chosen


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def process_rss_bytes() -> int:
    """Current resident set size of this process (0 where /proc is unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def working_memory_bytes(device: torch.device | str, max_memory_gb: float = 4.0) -> int:
    """Bytes that chunked work may use now: the process bound minus what is already in use, and at
    most half of what the device still has free; never below ``MIN_WORKING_BYTES``."""
    device = torch.device(device)
    bound = int(max_memory_gb * (1 << 30))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(bound - torch.cuda.memory_allocated(device), free // 2)
    else:
        budget = bound - process_rss_bytes()
        available = _meminfo_available()
        if available is not None:
            budget = min(budget, available // 2)
    return max(MIN_WORKING_BYTES, budget)


# Measured working-set bytes per unit (see docs/lrm.md, "Memory"); generous by design.
BYTES_PER_POINT_FUSED = 1200  # fused field: 12 indices + weights, 3 hidden activations, outputs
BYTES_PER_POINT_EXACT = 5200  # exact field: grid_sample output + permuted copy (3C floats each), MLP
BYTES_PER_SAMPLE = 160  # compositing: depths, raw, rgb (unsorted + sorted), weights, indices


def chunk_sizes(device: torch.device | str, max_memory_gb: float, samples_per_ray: int, fused: bool
                ) -> tuple[int, int]:
    """(rays per chunk, points per field call) within the current working-memory budget.

    Half the budget goes to the per-ray compositing arrays, the other half to one field evaluation
    (the exact field evaluates all of a chunk's samples of one pass at once, so its ray chunk is
    sized by the field cost instead)."""
    budget = working_memory_bytes(device, max_memory_gb)
    if fused:
        points = max(4096, budget // 2 // BYTES_PER_POINT_FUSED)
        if torch.device(device).type == "cpu":
            points = min(points, CPU_FIELD_CHUNK)
        rays = max(256, budget // 2 // (BYTES_PER_SAMPLE * samples_per_ray))
    else:
        per_ray = (samples_per_ray // 2) * BYTES_PER_POINT_EXACT + BYTES_PER_SAMPLE * samples_per_ray
        rays = max(64, budget // per_ray)
        points = rays * samples_per_ray
    return int(rays), int(points)
