"""Exponential moving average of a set of parameters (foreach ops; no Python loop per tensor in the update)."""

from __future__ import annotations

import torch


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param, for the named parameters given."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.params = named_params
        self.shadow = {k: p.detach().clone() for k, p in named_params.items()}

    @torch.no_grad()
    def update(self) -> None:
        names = list(self.params)
        torch._foreach_lerp_([self.shadow[k] for k in names], [self.params[k].detach() for k in names],
                             1.0 - self.decay)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for k, p in self.params.items():
            p.copy_(self.shadow[k])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:3]}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])
