"""Diversity of token sequences (Table 4), per sample on GPT-2 ids, then mean ± std over samples
(docs/evaluation-fidelity.md, "Table 4"):

- unique-unigram fraction |set(x)| / L;
- unigram entropy H = −Σ_v (c_v/L) ln(c_v/L), in nats;
- repetition rate over the previous `window` (100) tokens, in two readings:
  literal (the caption, "fraction of tokens that appear in the previous 100 tokens"): n = 1 below;
  paper (n = 3, the reading that reproduces the paper's OpenWebText row; see bench/repetition.py): the fraction of
  positions whose n-gram already started among the `window` positions before it,
  rep_n = (1/(G−1)) Σ_{i=1}^{G−1} 1[g_i ∈ {g_max(0,i−window), …, g_{i−1}}], g_i = (x_i, …, x_{i+n−1}), G = L − n + 1;
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
PAPER_NGRAM = 3  # the repetition reading that reproduces the paper's OWT row (bench/repetition.py)


def unique_unigram_fraction(x: Sequence[int]) -> float:
    return len(set(x)) / len(x)


def unigram_entropy(x: Sequence[int]) -> float:
    n = len(x)
    return -sum(c / n * math.log(c / n) for c in Counter(x).values())


def repetition_rate(x: Sequence[int], window: int = REPETITION_WINDOW, n: int = 1) -> float:
    """Fraction of n-gram positions i ≥ 1 whose n-gram already started among the `window` positions before it
    (n = 1: the token itself, the caption's literal reading)."""
    grams = list(zip(*(x[k:] for k in range(n))))
    if len(grams) < 2:
        raise UserError(f"the repetition rate of {n}-grams needs sequences of at least {n + 1} tokens")
    last_seen: dict[tuple, int] = {}
    repeats = 0
    for i, gram in enumerate(grams):
        j = last_seen.get(gram)
        if j is not None and j >= i - window:
            repeats += 1
        last_seen[gram] = i
    return repeats / (len(grams) - 1)


def distinct_n(samples: Sequence[Sequence[int]], n: int) -> float:
    """Unique n-grams over all samples / number of n-grams."""
    grams = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
    if not grams:
        raise UserError(f"samples are shorter than n={n}")
    return len(set(grams)) / len(grams)


def diversity(samples: np.ndarray | Sequence[Sequence[int]], distinct: Sequence[int] = (), window: int = REPETITION_WINDOW,
              paper_ngram: int = PAPER_NGRAM) -> dict:
    """Per-sample metrics and their mean ± std (sample std, ddof=1). `repetition_rate_<window>` is the literal
    reading, `repetition_rate_<window>_<n>gram` the paper's."""
    rows = [list(map(int, s)) for s in samples]
    if not rows:
        raise UserError("no samples to measure")
    if any(len(r) < paper_ngram + 1 for r in rows):
        raise UserError(f"every sample needs at least {paper_ngram + 1} tokens")
    per_sample = {
        "unique_unigram_fraction": [unique_unigram_fraction(r) for r in rows],
        "unigram_entropy": [unigram_entropy(r) for r in rows],
        f"repetition_rate_{window}": [repetition_rate(r, window) for r in rows],
        f"repetition_rate_{window}_{paper_ngram}gram": [repetition_rate(r, window, paper_ngram) for r in rows],
    }
    out = {name: mean_std(values) for name, values in per_sample.items()}
    for n in distinct:
        out[f"distinct_{n}"] = distinct_n(rows, n)
    out["n_samples"] = len(rows)
    out["lengths"] = sorted(set(len(r) for r in rows))
    return out


def protocol(window: int, paper_ngram: int = PAPER_NGRAM) -> dict:
    return {"unique_unigram_fraction": "|set(x)| / L per sample, GPT-2 ids",
            "unigram_entropy": "-sum_v (c_v/L) ln(c_v/L) per sample, nats",
            f"repetition_rate_{window}": f"literal caption: fraction of tokens i >= 1 found among the {window} tokens before",
            f"repetition_rate_{window}_{paper_ngram}gram": f"paper column: fraction of {paper_ngram}-gram positions whose "
            f"{paper_ngram}-gram started among the {window} positions before (reproduces the paper's OWT row)",
            "paper_column": f"repetition_rate_{window}_{paper_ngram}gram", "aggregation": "mean ± std (ddof 1) over samples"}


def table(rows: list[tuple[str, dict]], window: int = REPETITION_WINDOW, paper_ngram: int = PAPER_NGRAM) -> str:
    """Table 4: one row per source (sampler setting or training data)."""
    distinct = sorted({k for _, m in rows for k in m if k.startswith("distinct_")})
    header = (["samples", "N", "unique unigrams", "entropy (nats)", f"rep@{window} ({paper_ngram}-gram, paper)",
               f"rep@{window} (literal)"] + [k.replace("_", "-") for k in distinct])
    body = []
    for name, m in rows:
        body.append([name, m["n_samples"], fmt_pm(m["unique_unigram_fraction"]), fmt_pm(m["unigram_entropy"]),
                     fmt_pm(m[f"repetition_rate_{window}_{paper_ngram}gram"]), fmt_pm(m[f"repetition_rate_{window}"])]
                    + [f"{m[k]:.3f}" if k in m else "–" for k in distinct])
    return markdown_table(header, body) + ("\n\nmean ± std over samples. Repetition: the paper's column counts "
                                           f"{paper_ngram}-grams seen in the previous {window} positions; the literal "
                                           "column counts single tokens (docs/evaluation-fidelity.md).")
