"""transformers-4.42 DINOv2 position-embedding resize, implemented in our subclass only."""

from __future__ import annotations

import math

import numpy as np
import torch
from transformers import Dinov2Config, Dinov2Model

from vfusion3d_core.lrm.dino_legacy import LegacyDinov2Model, legacy_resize_position_embeddings

KEYS_A = -0.75  # cubic-convolution parameter of torch's bicubic mode


def cubic_weights(t: float) -> list[float]:
    a = KEYS_A
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1
    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def resize_1d(values: np.ndarray, out_len: int, source_positions: np.ndarray) -> np.ndarray:
    out = np.zeros((out_len, values.shape[1]))
    for j, x in enumerate(source_positions):
        x0 = math.floor(x)
        for w, off in zip(cubic_weights(x - x0), (-1, 0, 1, 2), strict=True):
            out[j] += w * values[min(max(x0 + off, 0), len(values) - 1)]
    return out


def test_legacy_resize_uses_scale_factor_positions():
    side, n, dim = 5, 4, 3
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 1 + side * side, dim, generator=gen)
    got = legacy_resize_position_embeddings(pos, n, n)
    assert got.shape == (1, 1 + n * n, dim)
    assert torch.equal(got[:, 0], pos[:, 0])
    scale = (n + 0.1) / side
    src = (np.arange(n) + 0.5) / scale - 0.5  # 4.42: positions follow the scale factor
    grid = pos[0, 1:].reshape(side, side, dim).double().numpy()
    rows = np.stack([resize_1d(grid[:, c, :], n, src) for c in range(side)], 1)  # resize along height
    ref = np.stack([resize_1d(rows[r], n, src) for r in range(n)], 0)  # then along width
    np.testing.assert_allclose(got[0, 1:].reshape(n, n, dim).numpy(), ref, atol=1e-5)
    exact = (np.arange(n) + 0.5) * side / n - 0.5  # transformers 5: exact output size
    rows5 = np.stack([resize_1d(grid[:, c, :], n, exact) for c in range(side)], 1)
    ref5 = np.stack([resize_1d(rows5[r], n, exact) for r in range(n)], 0)
    assert np.abs(ref5 - ref).max() > 1e-3  # the two conventions really differ


def test_legacy_model_differs_from_stock_only_when_resizing():
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=70, patch_size=14)
    torch.manual_seed(0)
    stock = Dinov2Model(cfg).eval()
    legacy = LegacyDinov2Model(cfg).eval()
    legacy.load_state_dict(stock.state_dict())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        native = torch.randn(1, 3, 70, 70, generator=gen)
        torch.testing.assert_close(legacy(native).last_hidden_state, stock(native).last_hidden_state)
        small = torch.randn(1, 3, 64, 64, generator=gen)
        diff = (legacy(small).last_hidden_state - stock(small).last_hidden_state).abs().max()
    assert diff > 1e-4
    assert type(stock.embeddings).__name__ == "Dinov2Embeddings"  # the library class is untouched


def test_encoder_normalises_in_graph(tiny_model):
    """A mid-grey image equal to the ImageNet mean feeds zeros into the patch embedding."""
    enc = tiny_model.encoder
    seen = {}
    handle = enc.dino.embeddings.patch_embeddings.register_forward_pre_hook(
        lambda mod, args: seen.setdefault("x", args[0].clone()))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 64, 64)
    with torch.no_grad():
        enc(mean)
    handle.remove()
    assert seen["x"].abs().max() < 1e-6


def test_encoder_loads_local_pretrained_dinov2(tmp_path):
    """`dino_pretrained_path` loads a local transformers checkpoint (as saved by transformers)."""
    from vfusion3d_core.lrm import LRM, get_preset

    cfg = get_preset("tiny")
    torch.manual_seed(3)
    stock = Dinov2Model(Dinov2Config(**cfg.dino_config))
    stock.save_pretrained(tmp_path / "dino")
    cfg.dino_pretrained_path = str(tmp_path / "dino")
    model = LRM(cfg)
    assert type(model.encoder.dino.embeddings).__name__ == "LegacyDinov2Embeddings"
    for name, tensor in stock.state_dict().items():
        assert torch.equal(model.encoder.dino.state_dict()[name], tensor), name
