"""Scale presets of the LRM: ``tiny`` (2-core CPU), ``small`` (one GPU), ``paper`` (released config)."""

from __future__ import annotations

from .config import DINOV2_BASE, LRMConfig

PRESETS = ("tiny", "small", "paper")


def paper() -> LRMConfig:
    """The released VFusion3D configuration (452M parameters, DINOv2-base at 512 px)."""
    return LRMConfig(
        camera_embed_dim=1024, rendering_samples_per_ray=128, transformer_dim=1024, transformer_layers=16,
        transformer_heads=16, triplane_low_res=32, triplane_high_res=64, triplane_dim=80,
        encoder_feat_dim=768, source_size=512, render_size=384, dino_config=dict(DINOV2_BASE),
    )


def small() -> LRMConfig:
    """One-GPU scale: DINOv2-small-shaped encoder, 12 blocks of width 512."""
    dino = dict(DINOV2_BASE, hidden_size=384, num_attention_heads=6)
    return LRMConfig(
        camera_embed_dim=512, rendering_samples_per_ray=96, transformer_dim=512, transformer_layers=12,
        transformer_heads=8, triplane_low_res=32, triplane_high_res=64, triplane_dim=40,
        encoder_feat_dim=384, source_size=336, render_size=192, dino_config=dino,
    )


def tiny() -> LRMConfig:
    """CPU test scale. The encoder is built for 70 px (5x5 patches) and fed 64 px, so the
    released model's position-embedding resize path is exercised exactly as at 518 -> 512."""
    dino = dict(DINOV2_BASE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=70)
    return LRMConfig(
        camera_embed_dim=32, rendering_samples_per_ray=32, transformer_dim=32, transformer_layers=2,
        transformer_heads=4, triplane_low_res=8, triplane_high_res=16, triplane_dim=8,
        encoder_feat_dim=32, source_size=64, render_size=32, decoder_hidden_dim=32, dino_config=dino,
    )


def get_preset(name: str) -> LRMConfig:
    """Config of the named preset; raises ValueError for unknown names."""
    builders = {"tiny": tiny, "small": small, "paper": paper}
    if name not in builders:
        raise ValueError(f"unknown LRM preset {name!r}; choose one of {PRESETS}")
    return builders[name]()
