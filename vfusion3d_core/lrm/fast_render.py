"""Volume rendering with empty-space skipping (the fast path of ``LRM.render``).

Same sampling, compositing and batch conventions as ``renderer.render_rays`` (K stratified +
K importance samples, missed-ray limits and the depth clamp over the whole call). Two kinds of
samples are not sent through the field:

- Occupancy (optional, per object): the field is evaluated once on a g^3 grid over the box; a
  cell is occupied when the density at one of its corners reaches ``density_eps``, and occupied
  cells are dilated by one. Samples in unoccupied cells take the mean raw density and colour of
  their cell's corners, so rays through empty space, and the parts of rays in front of and behind
  an object, cost a grid lookup instead of the decoder MLP.
- Fine samples: an importance sample is evaluated only if the coarse compositing weight of the
  interval it falls in, max-pooled over that interval and its two neighbours, is at least
  ``weight_eps``. Otherwise the interval is empty (alpha ~ 0) or hidden (transmittance ~ 0) at the
  coarse resolution, and the sample's raw density and colour are linearly interpolated from the
  two enclosing coarse samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .decoder import activate_density
from .importance import importance_depths
from .ray_limits import coarse_depths, fill_missed_rays, ray_box_limits
from .renderer import Field


def field_values(field: Field) -> Callable[[torch.Tensor], torch.Tensor]:
    """points [P, 3] -> packed [P, 4] float32 (raw density, rgb) for any field."""
    values = getattr(field, "values", None)
    if values is not None:
        return values

    def packed(points: torch.Tensor) -> torch.Tensor:
        raw, rgb = field(points)
        return torch.cat([raw.float(), rgb.float()], dim=-1)
    return packed


class Occupancy:
    """Occupancy grid of a field over [-1, 1]^3 with ``resolution`` vertices (resolution - 1 cells)
    per axis. Unoccupied cells answer with the mean raw density and colour of their 8 corners."""

    def __init__(self, field: Field, resolution: int = 64, density_eps: float = 1e-3, dilate: int = 1,
                 chunk_points: int = 1 << 16, device: torch.device | str = "cpu"):
        g = resolution
        assert g >= 2, g
        values_fn = field_values(field)
        coords = torch.linspace(-1.0, 1.0, g, device=device)
        points = torch.stack(torch.meshgrid(coords, coords, coords, indexing="ij"), -1).reshape(-1, 3)
        values = torch.cat([values_fn(points[i:i + chunk_points]) for i in range(0, len(points), chunk_points)])
        values = values.reshape(g, g, g, 4).permute(3, 0, 1, 2)[None]  # [1, 4, x, y, z]
        busy = (activate_density(values[:, :1]) >= density_eps).float()
        cells = F.max_pool3d(busy, 2, 1)  # a cell is busy when one of its 8 corners is
        if dilate:
            cells = F.max_pool3d(cells, 2 * dilate + 1, 1, dilate)
        self.resolution = g
        self.occupied = cells.reshape(-1) > 0  # [(g-1)^3], cell (x, y, z) at (x * (g-1) + y) * (g-1) + z
        self.cell_values = F.avg_pool3d(values, 2, 1)[0].reshape(4, -1).T.contiguous()  # [(g-1)^3, 4]
        self.evaluations = len(points)

    def cells(self, points: torch.Tensor) -> torch.Tensor:
        """points [P, 3] -> flat cell index [P]."""
        n = self.resolution - 1
        cell = ((points.clamp(-1, 1) + 1) * (n / 2)).long().clamp_(0, n - 1)
        return (cell[:, 0] * n + cell[:, 1]) * n + cell[:, 2]


@dataclass
class PreparedField:
    """A field plus (optionally) its occupancy grid."""

    field: Field
    occupancy: Occupancy | None = None

    def __post_init__(self) -> None:
        self._values = field_values(self.field)

    def evaluate(self, points: torch.Tensor) -> tuple[torch.Tensor, int]:
        """points [P, 3] -> packed [P, 4] (raw density, rgb) float32 and the number of field
        evaluations: the field at occupied points, the occupancy grid elsewhere (the field
        everywhere without a grid)."""
        if self.occupancy is None:
            return self._values(points), len(points)
        cells = self.occupancy.cells(points)
        out = self.occupancy.cell_values[cells]
        index = self.occupancy.occupied[cells].nonzero().squeeze(1)
        if index.numel():
            out[index] = self._values(points[index])
        return out, int(index.numel())


def _composite(depths: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``compositing.composite`` on packed samples (same maths, fewer passes over memory).

    depths [R, S], values [R, S, 4] (raw, rgb) -> rgb [R, 3], depth [R], alpha [R], weights [R, S-1].
    """
    mid = (values[:, 1:] + values[:, :-1]).mul_(0.5)  # [R, S-1, 4]: averaged raw density and colour
    delta = depths[:, 1:] - depths[:, :-1]
    depth_mid = (depths[:, 1:] + depths[:, :-1]).mul_(0.5)
    alpha = 1 - torch.exp(-activate_density(mid[..., 0]) * delta)
    shifted = torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], dim=-1)
    weights = alpha * torch.cumprod(shifted, dim=-1)[:, :-1]
    total = weights.sum(dim=-1)
    colour = torch.bmm(weights[:, None, :], mid[..., 1:])[:, 0]  # [R, 3]
    depth = torch.nan_to_num((weights * depth_mid).sum(dim=-1) / total, nan=float("inf"))
    return colour, depth, total, weights


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values [R, S, C], index [R, M] (into S) -> [R, M, C], by row lookups of the flattened array."""
    r, s, c = values.shape
    flat = index + torch.arange(r, device=index.device)[:, None] * s
    return values.reshape(r * s, c).index_select(0, flat.reshape(-1)).view(r, -1, c)


def _points(origins: torch.Tensor, dirs: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """origins/dirs [R, 3], depths [R, S] -> points [R * S, 3]."""
    return (origins[:, None] + depths[..., None] * dirs[:, None]).reshape(-1, 3)


def _fine_samples(prepared: PreparedField, origins: torch.Tensor, dirs: torch.Tensor, d_coarse: torch.Tensor,
                  coarse_values: torch.Tensor, weights: torch.Tensor, d_fine: torch.Tensor,
                  weight_eps: float) -> tuple[torch.Tensor, int]:
    """Fine samples: evaluated where the pooled coarse weight is >= weight_eps (and occupied),
    interpolated between the enclosing coarse samples elsewhere.

    d_coarse [R, K] (sorted), coarse_values [R, K, 4], weights [R, K-1], d_fine [R, M] ->
    values [R, M, 4], number of evaluated samples.
    """
    k = d_coarse.shape[1]
    m = d_fine.shape[1]
    j = (torch.searchsorted(d_coarse, d_fine.contiguous(), right=True) - 1).clamp_(0, k - 2)  # interval
    pooled = F.max_pool1d(weights[:, None], 3, 1, padding=1)[:, 0]  # [R, K-1]
    need = (pooled.gather(1, j) >= weight_eps).reshape(-1)  # [R * M]
    lo_d, hi_d = d_coarse.gather(1, j), d_coarse.gather(1, j + 1)
    t = ((d_fine - lo_d) / (hi_d - lo_d).clamp_min(1e-12)).clamp_(0, 1)[..., None]  # [R, M, 1]
    values = torch.lerp(_take(coarse_values, j), _take(coarse_values, j + 1), t)
    index = need.nonzero().squeeze(1)
    evaluated = 0
    if index.numel():
        ray = index // m
        points = origins[ray] + d_fine.reshape(-1)[index, None] * dirs[ray]
        out, evaluated = prepared.evaluate(points)
        values.view(-1, 4)[index] = out
    return values, evaluated


def _render_chunk(prepared: PreparedField, origins: torch.Tensor, dirs: torch.Tensor, start: torch.Tensor,
                  end: torch.Tensor, samples_per_ray: int, weight_eps: float | None, deterministic: bool,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """One chunk of rays -> (rgb [R, 3], depth [R], alpha [R], min depth, max depth, evaluated points)."""
    r = origins.shape[0]
    k = samples_per_ray // 2
    d_coarse = coarse_depths(start, end, k, deterministic, generator)
    coarse_values, evaluated = prepared.evaluate(_points(origins, dirs, d_coarse))
    coarse_values = coarse_values.view(r, k, 4)
    coarse_weights = _composite(d_coarse, coarse_values)[3]
    d_fine = importance_depths(d_coarse, coarse_weights, k, deterministic, generator)
    if weight_eps is None:
        fine_values, n_fine = prepared.evaluate(_points(origins, dirs, d_fine))
        fine_values = fine_values.view(r, k, 4)
    else:
        fine_values, n_fine = _fine_samples(prepared, origins, dirs, d_coarse, coarse_values, coarse_weights,
                                            d_fine, weight_eps)
    depths, order = torch.sort(torch.cat([d_coarse, d_fine], dim=1), dim=1)
    values = _take(torch.cat([coarse_values, fine_values], dim=1), order)
    rgb, depth, alpha, _ = _composite(depths, values)
    return rgb, depth, alpha, depths[:, 0].min(), depths[:, -1].max(), evaluated + n_fine


@torch.no_grad()
def render_rays_skipping(fields: list[Field | PreparedField], origins: torch.Tensor, dirs: torch.Tensor,
                         samples_per_ray: int, chunk_rays: int, weight_eps: float | None = 1e-4,
                         deterministic: bool = True, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Like ``renderer.render_rays`` with empty-space skipping (``weight_eps`` None: no fine-sample
    skipping; a plain field, not a ``PreparedField`` with a grid: no occupancy skipping).

    origins, dirs [B, R, 3] -> rgb [B, R, 3] (no background), depth [B, R], alpha [B, R], and the
    number of field evaluations (out of B * R * samples_per_ray; occupancy grids not counted).
    """
    b, r, _ = origins.shape
    assert len(fields) == b and dirs.shape == origins.shape, (len(fields), origins.shape, dirs.shape)
    start, end, valid = ray_box_limits(origins.reshape(-1, 3), dirs.reshape(-1, 3))
    start, end = fill_missed_rays(start, end, valid)
    start, end = start.reshape(b, r), end.reshape(b, r)
    rgb = torch.empty(b, r, 3, device=origins.device)
    depth = torch.empty(b, r, device=origins.device)
    alpha = torch.empty(b, r, device=origins.device)
    low = torch.full((), float("inf"), device=origins.device)
    high = torch.full((), float("-inf"), device=origins.device)
    evaluated = 0
    for i, field in enumerate(fields):
        prepared = field if isinstance(field, PreparedField) else PreparedField(field)
        for lo in range(0, r, chunk_rays):
            sl = slice(lo, lo + chunk_rays)
            rgb[i, sl], depth[i, sl], alpha[i, sl], d_min, d_max, n_eval = _render_chunk(
                prepared, origins[i, sl], dirs[i, sl], start[i, sl], end[i, sl], samples_per_ray, weight_eps,
                deterministic, generator)
            low, high = torch.minimum(low, d_min), torch.maximum(high, d_max)
            evaluated += n_eval
    return rgb, depth.clamp_(low, high), alpha, evaluated
