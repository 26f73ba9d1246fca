"""Conditioning at arbitrary positions: prefix, suffix and infilling are one thing, a set of positions fixed to given
token ids. The samplers clamp them before every step, before the denoiser and in the output; the model is never told
which positions are fixed (they are simply unmasked tokens to it), as in the reference sampler's `proj`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import UserError


def _rows(name: str, value) -> list[list[int]]:
    """A flat list (shared by every row) becomes one row; a list of lists stays per-row."""
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays
        value = value.tolist()
    value = list(value)
    if value and isinstance(value[0], (list, tuple)) or (value and isinstance(value[0], torch.Tensor)):
        return [[int(v) for v in (r.tolist() if isinstance(r, torch.Tensor) else r)] for r in value]
    try:
        return [[int(v) for v in value]]
    except (TypeError, ValueError):
        raise UserError(f"conditioning {name} must be integers or lists of integers, got {value!r}") from None


class Conditioning:
    """Fixed token ids at fixed positions.

    `Conditioning(positions, ids)`: `positions` and `ids` are equal-length lists of ints shared by every row of the
    batch, or lists of such lists (one per row, each row with its own positions). Negative positions count from the
    end (-1 is the last token), so a suffix needs no length. Helpers: `prefix`, `suffix`, `from_mask`; `a + b` merges.
    """

    def __init__(self, positions, ids):
        self.positions, self.ids = _rows("positions", positions), _rows("ids", ids)
        if len(self.positions) != len(self.ids):
            raise UserError(f"conditioning has {len(self.positions)} rows of positions but {len(self.ids)} rows of ids")
        for r, (p, v) in enumerate(zip(self.positions, self.ids)):
            if len(p) != len(v):
                raise UserError(f"conditioning row {r}: {len(p)} positions but {len(v)} ids")

    @property
    def shared(self) -> bool:
        return len(self.positions) == 1

    @classmethod
    def prefix(cls, ids: Sequence[int] | Sequence[Sequence[int]]) -> "Conditioning":
        rows = _rows("ids", ids)
        return cls([list(range(len(r))) for r in rows], rows)

    @classmethod
    def suffix(cls, ids: Sequence[int] | Sequence[Sequence[int]]) -> "Conditioning":
        rows = _rows("ids", ids)
        return cls([list(range(-len(r), 0)) for r in rows], rows)

    @classmethod
    def from_mask(cls, mask: torch.Tensor, values: torch.Tensor) -> "Conditioning":
        """mask [B, L] (or [L]) bool: which positions are fixed; values: the ids there (other entries ignored)."""
        mask, values = torch.as_tensor(mask), torch.as_tensor(values)
        if mask.dtype != torch.bool or mask.shape != values.shape or mask.dim() not in (1, 2):
            raise UserError(f"from_mask needs a bool mask and ids of the same [B, L] or [L] shape, got "
                            f"{tuple(mask.shape)} {mask.dtype} and {tuple(values.shape)}")
        mask, values = mask.reshape(-1, mask.shape[-1]).cpu(), values.reshape(-1, values.shape[-1]).cpu()
        return cls([m.nonzero().flatten().tolist() for m in mask], [v[m].tolist() for m, v in zip(mask, values)])

    def __add__(self, other: "Conditioning") -> "Conditioning":
        if not isinstance(other, Conditioning):
            return NotImplemented
        if self.shared or other.shared or len(self.positions) == len(other.positions):
            n = max(len(self.positions), len(other.positions))
            pick = lambda rows, i: rows[0] if len(rows) == 1 else rows[i]  # noqa: E731
            return Conditioning([pick(self.positions, i) + pick(other.positions, i) for i in range(n)],
                                [pick(self.ids, i) + pick(other.ids, i) for i in range(n)])
        raise UserError(f"cannot merge conditionings with {len(self.positions)} and {len(other.positions)} rows")

    def __repr__(self) -> str:
        return f"Conditioning(rows={len(self.positions)}, fixed={[len(p) for p in self.positions][:8]})"

    def resolve(self, batch_size: int, length: int, n_tokens: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (mask [B, L] bool, values [B, L] int64), after checking every position and id."""
        if not self.shared and len(self.positions) != batch_size:
            raise UserError(f"conditioning has {len(self.positions)} rows for a batch of {batch_size}")
        mask = torch.zeros(len(self.positions), length, dtype=torch.bool)
        values = torch.zeros(len(self.positions), length, dtype=torch.int64)
        for r, (pos, ids) in enumerate(zip(self.positions, self.ids)):
            if len(pos) > length:
                raise UserError(f"conditioning row {r} fixes {len(pos)} tokens but the sequence has only {length}")
            for p, v in zip(pos, ids):
                if not -length <= p < length:
                    raise UserError(f"conditioning position {p} is out of range for length {length}")
                if not 0 <= v < n_tokens:
                    raise UserError(f"conditioning id {v} is outside the vocabulary [0, {n_tokens})")
                p %= length
                if mask[r, p] and values[r, p] != v:
                    raise UserError(f"conditioning row {r} fixes position {p} to two ids ({values[r, p].item()} and {v})")
                mask[r, p], values[r, p] = True, v
        mask, values = mask.expand(batch_size, length), values.expand(batch_size, length)
        return mask.to(device).contiguous(), values.to(device).contiguous()


def resolve(conditioning: Conditioning | None, batch_size: int, length: int, n_tokens: int, device):
    """(mask, values), or (None, None) without conditioning."""
    if conditioning is None:
        return None, None
    if not isinstance(conditioning, Conditioning):
        raise UserError(f"conditioning must be a pysedd.sampling.Conditioning, got {type(conditioning).__name__}")
    mask, values = conditioning.resolve(batch_size, length, n_tokens, device)
    return (mask, values) if bool(mask.any()) else (None, None)


def clamp(x: torch.Tensor, mask: torch.Tensor | None, values: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else torch.where(mask, values, x)
