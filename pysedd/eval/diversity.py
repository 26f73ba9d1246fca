"""Diversity of token sequences (Table 4), per sample on GPT-2 ids, then mean ± std over samples
(evaluation-protocols.md §4):

- unique-unigram fraction |set(x)| / L;
- unigram entropy H = −Σ_v (c_v/L) ln(c_v/L), in nats;
- repetition rate over the previous 100 tokens: (1/(L−1)) Σ_{i=1}^{L−1} 1[x_i ∈ {x_max(0,i−100), …, x_{i−1}}];
- optionally corpus distinct-n (unique n-grams / all n-grams, pooled over samples), which sees cross-sample collapse.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

from ..errors import UserError
from .common import fmt_pm, markdown_table, mean_std

REPETITION_WINDOW = 100


def unique_unigram_fraction(x: Sequence[int]) -> float:
    return len(set(x)) / len(x)


def unigram_entropy(x: Sequence[int]) -> float:
    n = len(x)
    return -sum(c / n * math.log(c / n) for c in Counter(x).values())


def repetition_rate(x: Sequence[int], window: int = REPETITION_WINDOW) -> float:
    """Fraction of positions i ≥ 1 whose token already occurred among the `window` tokens before it."""
    if len(x) < 2:
        raise UserError("the repetition rate needs sequences of at least 2 tokens")
    last_seen: dict[int, int] = {}
    repeats = 0
    for i, token in enumerate(x):
        j = last_seen.get(token)
        if i > 0 and j is not None and j >= i - window:
            repeats += 1
        last_seen[token] = i
    return repeats / (len(x) - 1)


def distinct_n(samples: Sequence[Sequence[int]], n: int) -> float:
    """Unique n-grams over all samples / number of n-grams."""
    grams = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
    if not grams:
        raise UserError(f"samples are shorter than n={n}")
    return len(set(grams)) / len(grams)


def diversity(samples: np.ndarray | Sequence[Sequence[int]], distinct: Sequence[int] = (), window: int = REPETITION_WINDOW) -> dict:
    """Per-sample metrics and their mean ± std (sample std, ddof=1)."""
    rows = [list(map(int, s)) for s in samples]
    if not rows:
        raise UserError("no samples to measure")
    if any(len(r) < 2 for r in rows):
        raise UserError("every sample needs at least 2 tokens")
    per_sample = {
        "unique_unigram_fraction": [unique_unigram_fraction(r) for r in rows],
        "unigram_entropy": [unigram_entropy(r) for r in rows],
        f"repetition_rate_{window}": [repetition_rate(r, window) for r in rows],
    }
    out = {name: mean_std(values) for name, values in per_sample.items()}
    for n in distinct:
        out[f"distinct_{n}"] = distinct_n(rows, n)
    out["n_samples"] = len(rows)
    out["lengths"] = sorted(set(len(r) for r in rows))
    return out


def table(rows: list[tuple[str, dict]], window: int = REPETITION_WINDOW) -> str:
    """Table 4: one row per source (sampler setting or training data)."""
    distinct = sorted({k for _, m in rows for k in m if k.startswith("distinct_")})
    header = ["samples", "N", "unique unigrams", "entropy (nats)", f"rep@{window}"] + [k.replace("_", "-") for k in distinct]
    body = []
    for name, m in rows:
        body.append([name, m["n_samples"], fmt_pm(m["unique_unigram_fraction"]), fmt_pm(m["unigram_entropy"]),
                     fmt_pm(m[f"repetition_rate_{window}"])] + [f"{m[k]:.3f}" if k in m else "–" for k in distinct])
    return markdown_table(header, body) + "\n\nmean ± std over samples."
