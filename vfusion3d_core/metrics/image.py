"""Per-image quality metrics on [0, 1] RGB images [N, 3, H, W] -> [N]."""

from __future__ import annotations

import torch
from torch import nn


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    assert pred.shape == target.shape and pred.dim() == 4 and pred.shape[1] == 3, (pred.shape, target.shape)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image (peak 1.0); identical images give 100 dB rather than inf."""
    _check(pred, target)
    mse = ((pred - target) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image (torchmetrics: 11x11 Gaussian window, sigma 1.5, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(pred, target)
    kernel = min(11, pred.shape[-1] - (1 - pred.shape[-1] % 2))  # odd and no larger than the image
    return structural_similarity_index_measure(pred.float(), target.float(), data_range=1.0, reduction="none",
                                               kernel_size=kernel)


@torch.no_grad()
def lpips_distance(net: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LPIPS distance per image with an `lpips.LPIPS` module (inputs mapped from [0, 1] to [-1, 1])."""
    _check(pred, target)
    return net(pred * 2 - 1, target * 2 - 1).flatten()
