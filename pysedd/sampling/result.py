"""What every sampler returns: the token ids plus its cost (network calls, tokens, wall time)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

EOS_ID = 50256  # GPT-2's <|endoftext|>


@dataclass
class SampleOutput:
    """samples [B, L] int64; nfe counts batched network calls (one call on B rows counts once); tokens counts the
    generated positions (fixed/prompt positions excluded); wall_time is device-synchronised seconds."""

    samples: torch.Tensor
    nfe: int
    tokens: int
    wall_time: float
    sampler: str
    steps: int | None = None
    cache_hits: int = 0
    lengths: torch.Tensor | None = None  # [B] tokens before the first EOS, when trimming was asked for
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_time if self.wall_time > 0 else float("inf")

    def sequences(self) -> list[list[int]]:
        """Rows as lists, cut before the first EOS when `lengths` is set."""
        rows = self.samples.tolist()
        if self.lengths is None:
            return rows
        return [row[:n] for row, n in zip(rows, self.lengths.tolist())]

    def meta(self) -> dict[str, Any]:
        return dict(sampler=self.sampler, steps=self.steps, nfe=self.nfe, tokens=self.tokens,
                    wall_time=self.wall_time, tokens_per_s=self.tokens_per_s, cache_hits=self.cache_hits, **self.extra)


def eos_lengths(samples: torch.Tensor, eos_id: int = EOS_ID, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """[B] index of the first generated EOS in each row (the row length when there is none); positions in `ignore`
    ([B, L] bool, e.g. a BOS or prompt that was given, not generated) do not count."""
    is_eos = samples == eos_id
    if ignore is not None:
        is_eos &= ~ignore
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), samples.shape[1])
    return first.to(torch.int64)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Wall time between construction and `stop()`, synchronising the device at both ends."""

    def __init__(self, device: torch.device):
        self.device = device
        synchronize(device)
        self.start = time.perf_counter()

    def stop(self) -> float:
        synchronize(self.device)
        return time.perf_counter() - self.start
