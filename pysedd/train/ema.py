"""Exponential moving average of the trainable parameters, with SEDD's warm-up of the decay.

decay_n = min(decay, (1 + n) / (10 + n)) where n counts updates (1 at the first one), and
shadow ← shadow − (1 − decay_n)·(shadow − param) (docs/sedd.md#training-recipe, docs/sedd.md#i12).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch


class EMA:
    def __init__(self, parameters: Iterable[torch.nn.Parameter], decay: float = 0.9999):
        self.params = [p for p in parameters if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay
        self.num_updates = 0

    def decay_at(self, n: int) -> float:
        """The decay used by the n-th update (n ≥ 1)."""
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        # shadow + (1 - decay)·(param − shadow), one fused pass over all tensors
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay_at(self.num_updates))

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily puts the EMA weights into the model (for evaluation and export)."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def state_dict(self) -> dict:
        """The reference layout: decay, num_updates and shadow_params as a list in model.parameters() order."""
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow_params": list(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow_params"]
        if len(shadow) != len(self.shadow) or any(a.shape != b.shape for a, b in zip(shadow, self.shadow)):
            raise ValueError("EMA state does not match the model's trainable parameters")
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        with torch.no_grad():
            for dst, src in zip(self.shadow, shadow):
                dst.copy_(src)
