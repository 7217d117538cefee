"""Training losses: LPIPS (lpips package), optional MSE, opacity (alpha vs mask), optional triplane TV."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# torchvision backbone weights LPIPS needs; loaded only from the local torch hub cache, never downloaded.
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                  "squeeze": "squeezenet1_1-b8a52dc0.pth"}


class LPIPSUnavailable(RuntimeError):
    """LPIPS backbone weights are not in the local torch hub cache."""


def lpips_backbone_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def lpips_weights_problem(net: str, random_backbone: bool = False) -> str | None:
    """Why an LPIPS with backbone ``net`` cannot be built here (its torchvision weights are not in the local
    torch hub cache), or None when it can."""
    if random_backbone or lpips_backbone_path(net).is_file():
        return None
    return (f"LPIPS needs the torchvision {net} weights at {lpips_backbone_path(net)} (TORCH_HOME="
            f"{os.environ.get('TORCH_HOME', '~/.cache/torch')}); copy them there, or set lpips_random_backbone=True")


def build_lpips(net: str = "alex", random_backbone: bool = False) -> nn.Module:
    """The lpips package's LPIPS metric, frozen.

    The linear calibration layers ship inside the package. The backbone comes from the local torch hub
    cache; ``random_backbone=True`` uses a randomly initialised backbone instead (tests, `tiny`, and
    machines without the weights) and logs it, because such an LPIPS is only a perceptual-ish loss.
    """
    import lpips

    if net not in BACKBONE_FILES:
        raise ValueError(f"unknown LPIPS net {net!r}; choose from {sorted(BACKBONE_FILES)}")
    problem = lpips_weights_problem(net, random_backbone)
    if problem:
        raise LPIPSUnavailable(problem)
    if random_backbone:
        log.warning("LPIPS uses a RANDOM %s backbone (lpips_random_backbone=True)", net)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_backbone, verbose=False)
    model.eval().requires_grad_(False)
    return model


def triplane_tv(planes: torch.Tensor) -> torch.Tensor:
    """Total variation of planes [N, 3, C, H, W] (mean absolute neighbour difference)."""
    dh = (planes[..., 1:, :] - planes[..., :-1, :]).abs().mean()
    dw = (planes[..., :, 1:] - planes[..., :, :-1]).abs().mean()
    return dh + dw


class ReconstructionLoss(nn.Module):
    """Weighted sum of the recipe's losses; returns the total and each term (detached) for logging."""

    def __init__(self, lpips_weight: float, mse_weight: float, opacity_weight: float, tv_weight: float,
                 lpips_net: str = "alex", lpips_random_backbone: bool = False) -> None:
        super().__init__()
        self.weights = {"lpips": lpips_weight, "mse": mse_weight, "opacity": opacity_weight, "tv": tv_weight}
        self.lpips = build_lpips(lpips_net, lpips_random_backbone) if lpips_weight > 0 else None

    def forward(self, rgb: torch.Tensor, alpha: torch.Tensor, target_rgb: torch.Tensor, target_mask: torch.Tensor,
                planes: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """rgb / target_rgb [N, M, 3, H, W] in [0, 1]; alpha / target_mask [N, M, 1, H, W]."""
        assert rgb.shape == target_rgb.shape and alpha.shape == target_mask.shape, (rgb.shape, target_rgb.shape)
        terms: dict[str, torch.Tensor] = {}
        if self.lpips is not None:
            pred = rgb.flatten(0, 1).float() * 2 - 1
            true = target_rgb.flatten(0, 1).float() * 2 - 1
            terms["lpips"] = self.lpips(pred, true).mean()
        if self.weights["mse"] > 0:
            terms["mse"] = F.mse_loss(rgb.float(), target_rgb.float())
        if self.weights["opacity"] > 0:
            terms["opacity"] = F.mse_loss(alpha.float(), target_mask.float())
        if self.weights["tv"] > 0 and planes is not None:
            terms["tv"] = triplane_tv(planes.float())
        total = sum(self.weights[k] * v for k, v in terms.items())
        return total, {k: float(v.detach()) for k, v in terms.items()}
