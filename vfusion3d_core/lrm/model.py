"""The triplane LRM: image + source camera -> triplanes -> rendered views / density queries."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from vfusion3d_core.cameras import from_render_vector, rays_from_cameras

from .attention import blocked_attention
from .checkpoint import WEIGHTS_NAME, read_checkpoint, save_checkpoint
from .conditioning import CameraEmbedder
from .config import LRMConfig
from .convert import (
    CheckpointMismatchError,
    check_finite,
    check_state_dict,
    convert_official_state_dict,
    ours_to_official,
)
from .decoder import TriplaneDecoder, activate_density, mask_out_of_box
from .encoder import DinoEncoder
from .fast_render import Occupancy, PreparedField, render_rays_skipping
from .fused_field import FusedField
from .inference import InferenceOptions, chunk_sizes
from .renderer import RenderOptions, render_rays
from .transformer import TriplaneTransformer
from .triplane import TriplaneUpsampler, sample_triplane


class LRM(nn.Module):
    """Large reconstruction model with the released VFusion3D architecture (docs/lrm.md)."""

    def __init__(self, config: LRMConfig):
        super().__init__()
        self.config = config
        self.encoder = DinoEncoder(config.dino_config, config.dino_pretrained_path, config.encoder_freeze)
        self.camera_embedder = CameraEmbedder(config.source_camera_dim, config.camera_embed_dim)
        self.transformer = TriplaneTransformer(
            config.transformer_dim, config.transformer_layers, config.transformer_heads,
            cond_dim=config.encoder_feat_dim, mod_dim=config.camera_embed_dim, low_res=config.triplane_low_res)
        self.upsampler = TriplaneUpsampler(config.transformer_dim, config.triplane_dim, config.triplane_low_res)
        self.decoder = TriplaneDecoder(3 * config.triplane_dim, config.decoder_hidden_dim, config.decoder_layers)

    def set_gradient_checkpointing(self, enabled: bool = True) -> LRM:
        """Recompute the transformer blocks' activations in the backward pass (``torch.utils.checkpoint``)
        instead of storing them: same gradients, less activation memory, about a third more compute."""
        self.transformer.gradient_checkpointing = bool(enabled)
        return self

    # --- image -> planes ----------------------------------------------------------------------------
    def encode(self, image: torch.Tensor, source_camera: torch.Tensor,
               options: InferenceOptions | None = None) -> torch.Tensor:
        """image [N, 3, H, W] in [0, 1], source_camera [N, 16] -> planes [N, 3, C, H', W'].

        With ``options`` whose compute dtype is bf16 the forward pass runs under bf16 autocast and
        the planes come back in float32; otherwise (and without options) it runs in the model's dtype.
        """
        n = image.shape[0]
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [N, 3, H, W], got {tuple(image.shape)}")
        if source_camera.shape != (n, self.config.source_camera_dim):
            raise ValueError(f"source_camera must be [N, {self.config.source_camera_dim}], "
                             f"got {tuple(source_camera.shape)}")
        if options is not None and options.compute_dtype(image.device) == torch.bfloat16:
            # no weight cache: every weight is used once per forward, a cache would only hold a bf16
            # copy of the whole model (+0.9 GB at `paper`) until the end of the call
            with torch.autocast(image.device.type, dtype=torch.bfloat16, cache_enabled=False), blocked_attention():
                return self._encode(image, source_camera).float()
        return self._encode(image, source_camera)

    def _encode(self, image: torch.Tensor, source_camera: torch.Tensor) -> torch.Tensor:
        cond = self.encoder(image)  # [N, 1 + patches, Dc]
        mod = self.camera_embedder(source_camera.to(cond.dtype))  # [N, E]
        tokens = self.transformer(cond, mod)  # [N, 3 * R * R, D]
        return self.upsampler(tokens)  # [N, 3, C, 2R, 2R]

    # --- point queries --------------------------------------------------------------------------------
    def query_raw(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """planes [N, 3, C, H, W], points [N, P, 3] -> raw density [N, P, 1], rgb [N, P, 3] (float32),
        with out-of-box points masked."""
        n, p = points.shape[:2]
        feats = sample_triplane(planes, points)  # [N, P, 3C]
        raw, rgb = self.decoder(feats.reshape(n * p, -1))  # 2-D input: fused addmm on CPU
        return mask_out_of_box(points, raw.float().reshape(n, p, 1), rgb.float().reshape(n, p, 3))

    def query_density(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """planes [N, 3, C, H, W], points [N, P, 3] -> activated density [N, P, 1], rgb [N, P, 3]."""
        if planes.dim() != 5 or planes.shape[1] != 3:
            raise ValueError(f"planes must be [N, 3, C, H, W], got {tuple(planes.shape)}")
        if points.dim() != 3 or points.shape[0] != planes.shape[0] or points.shape[-1] != 3:
            raise ValueError(f"points must be [N, P, 3] with N = {planes.shape[0]}, got {tuple(points.shape)}")
        raw, rgb = self.query_raw(planes, points)
        return activate_density(raw), rgb

    # --- rendering -------------------------------------------------------------------------------------
    def render(self, planes: torch.Tensor, cameras: torch.Tensor, size: int, deterministic: bool = True,
               crop: tuple[int, int, int, int] | None = None,
               background: float | tuple[float, float, float] | torch.Tensor = 1.0,
               chunk_rays: int | None = None, generator: torch.Generator | None = None,
               options: InferenceOptions | None = None, stats: dict | None = None) -> dict[str, torch.Tensor]:
        """Volume-render M views per triplane.

        planes [N, 3, C, H, W]; cameras [N, M, 25] render vectors; ``crop`` = (top, left, h, w) of
        the size x size pixel grid (default: the full image, h = w = size); background: scalar, RGB,
        or [N, M, 3]. Returns rgb [N, M, 3, h, w], depth [N, M, 1, h, w], alpha [N, M, 1, h, w].

        Without ``options`` this is the exact reference renderer (``chunk_rays`` default 4096).
        With ``options`` (see ``InferenceOptions``) the fast switches apply and ``chunk_rays``
        defaults to a size derived from ``options.max_memory_gb``. ``stats``, if given, receives
        ``evaluated`` (field evaluations) and ``samples`` (rays x samples per ray).
        """
        n, m = cameras.shape[:2]
        if cameras.dim() != 3 or cameras.shape[-1] != 25:
            raise ValueError(f"cameras must be [N, M, 25], got {tuple(cameras.shape)}")
        if planes.dim() != 5 or planes.shape[:2] != (n, 3):
            raise ValueError(f"planes must be [N, 3, C, H, W] with N = {n}, got {tuple(planes.shape)}")
        c2w, intrinsics = from_render_vector(cameras.reshape(n * m, 25).float())
        origins, dirs = rays_from_cameras(c2w, intrinsics, size, crop)  # [N*M, h, w, 3]
        h, w = origins.shape[1:3]
        samples = self.config.rendering_samples_per_ray
        origins, dirs = origins.reshape(n, -1, 3), dirs.reshape(n, -1, 3)
        if options is None or options.is_exact:
            if chunk_rays is None:
                chunk_rays = 4096 if options is None else chunk_sizes(
                    planes.device, options.max_memory_gb, samples, fused=False)[0]
            fields = [self._field(planes[i:i + 1]) for i in range(n)]
            opts = RenderOptions(samples, deterministic, chunk_rays, generator)
            rgb, depth, alpha = render_rays(fields, origins, dirs, opts)
            evaluated = origins.shape[0] * origins.shape[1] * samples
        else:
            auto_rays, chunk_points = chunk_sizes(planes.device, options.max_memory_gb, samples, options.fused_field)
            fields = [self.prepared_field(planes, i, options, chunk_points) for i in range(n)]
            rgb, depth, alpha, evaluated = render_rays_skipping(
                fields, origins, dirs, samples, chunk_rays or auto_rays,
                options.weight_eps if options.skip_empty else None, deterministic, generator)
        if stats is not None:
            stats.update(evaluated=evaluated, samples=origins.shape[0] * origins.shape[1] * samples)
        bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device)
        bg = bg.expand(n, m, 3) if bg.dim() < 3 else bg
        rgb = rgb.reshape(n, m, h, w, 3) + (1 - alpha.reshape(n, m, h, w, 1)) * bg[:, :, None, None, :]
        return {
            "rgb": rgb.permute(0, 1, 4, 2, 3),
            "depth": depth.reshape(n, m, 1, h, w),
            "alpha": alpha.reshape(n, m, 1, h, w),
        }

    def _field(self, plane: torch.Tensor):
        """Field callable over one item's planes [1, 3, C, H, W]: points [P, 3] -> (raw [P, 1], rgb [P, 3])."""
        def field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            raw, rgb = self.query_raw(plane, points[None])
            return raw[0], rgb[0]
        return field

    def prepared_field(self, planes: torch.Tensor, index: int, options: InferenceOptions,
                       chunk_points: int = 1 << 16) -> PreparedField:
        """``fast_field`` of item ``index`` of planes [N, 3, C, H, W] plus, with ``options.skip_empty``
        and ``occupancy_resolution`` > 0, its occupancy grid. Results are cached for as long as
        ``planes`` is alive and neither it nor the decoder was modified in place (a turntable renders
        one view per call)."""
        key = (planes._version, planes.shape, planes.device, options, chunk_points,
               tuple(p._version for p in self.decoder.parameters()))
        cached = self.__dict__.get("_prepared_cache")
        if cached is None or cached[0]() is not planes or cached[1] != key:
            cached = (weakref.ref(planes), key, {})
            self.__dict__["_prepared_cache"] = cached
        if index not in cached[2]:
            plane = planes[index:index + 1]
            field = self.fast_field(plane, options, chunk_points)
            occupancy = None
            if options.skip_empty and options.occupancy_resolution > 0:
                occupancy = Occupancy(field, options.occupancy_resolution, options.density_eps, 1, chunk_points,
                                      plane.device)
            cached[2][index] = PreparedField(field, occupancy)
        return cached[2][index]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_prepared_cache", None)  # weak references; rebuilt on demand
        return state

    def fast_field(self, plane: torch.Tensor, options: InferenceOptions, chunk_points: int = 1 << 16,
                   part: str = "field"):
        """Field of one item's planes [1, 3, C, H, W] under ``options``: the fused decoder
        (``FusedField``) in the dtype of ``part`` ("field": rendering, "mesh"), or ``query_raw``
        under autocast when not fused."""
        dtype = options.compute_dtype(plane.device, part)
        if options.fused_field:
            return FusedField(self.decoder, plane, dtype, chunk_points)
        if dtype == torch.float32:
            return self._field(plane)
        exact = self._field(plane.to(dtype))

        def field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.autocast(plane.device.type, dtype=dtype):
                return exact(points)
        return field

    def forward(self, image: torch.Tensor, source_camera: torch.Tensor, render_cameras: torch.Tensor,
                render_size: int, **render_kwargs) -> dict[str, torch.Tensor]:
        """encode + render; returns the render dict plus ``planes``."""
        planes = self.encode(image, source_camera)
        return {"planes": planes, **self.render(planes, render_cameras, render_size, **render_kwargs)}

    # --- weights ----------------------------------------------------------------------------------------
    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor], source: str | Path | None = None
                                 ) -> None:
        """Load a released VFusion3D state dict (OpenLRM / transformers-4.42 names).

        Raises CheckpointMismatchError (naming ``source``, the file, when given) on unmapped, missing or
        unexpected keys, shape mismatches and NaN/inf weights.
        """
        converted = convert_official_state_dict(state_dict)
        check_state_dict(self, converted, source, ours_to_official)
        check_finite(converted, source, ours_to_official)
        self.load_state_dict(converted, strict=True)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` to ``directory``."""
        return save_checkpoint(self.state_dict(), self.config, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> LRM:
        """Load a directory written by ``save_pretrained`` (raises CheckpointMismatchError if it
        does not match its config)."""
        config, state_dict = read_checkpoint(directory)
        config.dino_pretrained_path = None  # weights come from the checkpoint
        return cls.from_state_dict(config, state_dict, device, source=Path(directory) / WEIGHTS_NAME)

    @classmethod
    def from_state_dict(cls, config: LRMConfig, state_dict: Mapping[str, torch.Tensor],
                        device: str | torch.device = "cpu", official: bool = False,
                        source: str | Path | None = None) -> LRM:
        """Build on the meta device and assign ``state_dict`` (ours, or released names if ``official``).

        CheckpointMismatchError, naming ``source`` (the file the tensors came from), on missing, unexpected
        or mis-shaped tensors and on NaN/inf weights."""
        with torch.device("meta"):
            model = cls(config)
        if official:
            state_dict = convert_official_state_dict(state_dict)
        name_in_file = ours_to_official if official else None
        check_state_dict(model, state_dict, source, name_in_file)
        check_finite(state_dict, source, name_in_file)
        model.load_state_dict({k: v.to(device) for k, v in state_dict.items()}, strict=True, assign=True)
        leftover = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if leftover:
            raise CheckpointMismatchError(f"tensors left uninitialised after loading: {leftover[:6]}")
        return model.eval()
