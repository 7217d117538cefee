"""Per-image quality metrics on [0, 1] RGB images [N, 3, H, W] -> [N].

They run on the device of their inputs (``pred``; ``target`` is moved there); ``lpips_distance`` runs on
the LPIPS module's device (inputs moved there) under an optional ``ComputeSettings`` autocast.
"""

from __future__ import annotations

import torch
from torch import nn

from vfusion3d_core.compute import ComputeSettings, module_device


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"pred and target must both be [N, 3, H, W], got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image (peak 1.0); identical images give 100 dB rather than inf."""
    _check(pred, target)
    target = target.to(pred.device)
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image (torchmetrics: 11x11 Gaussian window, sigma 1.5, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(pred, target)
    kernel = min(11, pred.shape[-1] - (1 - pred.shape[-1] % 2))  # odd and no larger than the image
    return structural_similarity_index_measure(pred.float(), target.to(pred.device).float(), data_range=1.0,
                                               reduction="none", kernel_size=kernel)


@torch.no_grad()
def lpips_distance(net: nn.Module, pred: torch.Tensor, target: torch.Tensor,
                   compute: ComputeSettings | None = None) -> torch.Tensor:
    """LPIPS distance per image with an `lpips.LPIPS` module (inputs mapped from [0, 1] to [-1, 1]), on the
    module's device; float32 [N] there."""
    _check(pred, target)
    device = module_device(net)
    a, b = pred.to(device).float() * 2 - 1, target.to(device).float() * 2 - 1
    if compute is None:
        return net(a, b).flatten().float()
    with compute.autocast():
        return net(a, b).flatten().float()
