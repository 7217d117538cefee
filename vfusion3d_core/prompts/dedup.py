"""Exact and near-duplicate prompt removal.

Exact duplicates: equal after case folding (prompts are already normalized). Near duplicates: cosine
similarity of L2-normalized MiniLM sentence embeddings (masked mean of the token features, the
all-MiniLM-L6-v2 pooling) at or above ``threshold``. Greedy in input order: a prompt is kept when it
is not a duplicate of any prompt kept before it, nor of any ``existing`` prompt (the prompts already
published, which are never removed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Embedder = Callable[[list[str]], np.ndarray]


@dataclass
class DedupResult:
    kept: list[str]
    exact: int  # dropped as exact duplicates (of each other or of existing prompts)
    near: int  # dropped as near duplicates
    near_pairs: list[tuple[str, str, float]]  # (dropped, the kept/existing prompt it matched, cosine), first few


def minilm_embedder(batch_size: int = 256, path: str | None = None) -> Embedder:
    """Sentence embeddings [N, 384] from the packaged all-MiniLM-L6-v2 (frozen, CPU)."""
    from vfusion3d_core.video.text_encoder import load_text_encoder

    encoder = load_text_encoder(path, 64)

    def embed(texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, encoder.dim), np.float32)
        chunks = [encoder(texts[i:i + batch_size])[1] for i in range(0, len(texts), batch_size)]
        return torch.cat(chunks).float().numpy()

    return embed


def dedup_key(prompt: str) -> str:
    return prompt.casefold()


def deduplicate(prompts: list[str], existing: list[str], embed: Embedder, threshold: float = 0.95,
                max_pairs: int = 20) -> DedupResult:
    """Drop exact and near duplicates of ``prompts`` (among themselves and against ``existing``)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"near-duplicate cosine threshold must be in (0, 1], got {threshold}")
    seen = {dedup_key(p) for p in existing}
    unique: list[str] = []
    exact = 0
    for p in prompts:
        k = dedup_key(p)
        if k in seen:
            exact += 1
            continue
        seen.add(k)
        unique.append(p)
    if not unique:
        return DedupResult([], exact, 0, [])
    emb_new = np.asarray(embed(unique), np.float32)
    emb_old = np.asarray(embed(list(existing)), np.float32) if existing else np.zeros((0, emb_new.shape[1]),
                                                                                      np.float32)
    # max similarity of each new prompt to any existing prompt (blockwise to bound memory)
    best_old = np.full(len(unique), -1.0, np.float32)
    arg_old = np.zeros(len(unique), np.int64)
    for i in range(0, len(emb_old), 4096):
        sim = emb_new @ emb_old[i:i + 4096].T
        j = sim.argmax(1)
        val = sim[np.arange(len(unique)), j]
        better = val > best_old
        best_old[better], arg_old[better] = val[better], j[better] + i
    kept_idx: list[int] = []
    near_pairs: list[tuple[str, str, float]] = []
    near = 0
    kept_emb = np.zeros((0, emb_new.shape[1]), np.float32)
    for i, p in enumerate(unique):
        if best_old[i] >= threshold:
            near += 1
            if len(near_pairs) < max_pairs:
                near_pairs.append((p, existing[arg_old[i]], float(best_old[i])))
            continue
        if len(kept_idx):
            sim = kept_emb @ emb_new[i]
            j = int(sim.argmax())
            if sim[j] >= threshold:
                near += 1
                if len(near_pairs) < max_pairs:
                    near_pairs.append((p, unique[kept_idx[j]], float(sim[j])))
                continue
        kept_idx.append(i)
        kept_emb = np.concatenate([kept_emb, emb_new[i:i + 1]])
    return DedupResult([unique[i] for i in kept_idx], exact, near, near_pairs)
