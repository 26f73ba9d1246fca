"""Which definition of Table 4's repetition rate gives the paper's OpenWebText row?

The caption reads "fraction of tokens that appear in the previous 100 tokens"; the paper's OWT row is unique unigrams
0.49 ± 0.07, entropy 5.14 ± 0.31 nats, repetition 0.033 ± 0.013. This script packs an OpenWebText text file into
1024-token GPT-2 blocks (as `pysedd eval diversity --reference FILE` does) and prints, for every candidate reading,
mean ± std over blocks and the distance to the paper's number in units of the paper's std. The table is copied into
docs/evaluation-fidelity.md.

    PYTHONPATH=. python bench/repetition.py OWT_TEXT_FILE [--length 1024]
"""
from __future__ import annotations

import argparse

import numpy as np

from pysedd.eval.common import load_token_blocks
from pysedd.eval.diversity import repetition_rate, unigram_entropy, unique_unigram_fraction
from pysedd.tokenizer import get_tokenizer

PAPER_OWT = {"unique": (0.49, 0.07), "entropy": (5.14, 0.31), "repetition": (0.033, 0.013)}


def seq_rep(x, n: int) -> float:
    """Welleck et al.'s seq-rep-n: 1 − unique n-grams / n-grams of the whole sequence."""
    grams = list(zip(*(x[k:] for k in range(n))))
    return 1.0 - len(set(grams)) / len(grams)


def windowed(metric, size: int = 100):
    """The mean of `metric` over the non-overlapping `size`-token windows of a sequence."""
    return lambda x: float(np.mean([metric(x[s:s + size]) for s in range(0, len(x) - size + 1, size)]))


CANDIDATES = {
    "literal: token among the previous 100 tokens (n=1)": lambda x: repetition_rate(x, 100, 1),
    "2-gram started among the previous 100 positions": lambda x: repetition_rate(x, 100, 2),
    "3-gram started among the previous 100 positions (pysedd's paper column)": lambda x: repetition_rate(x, 100, 3),
    "4-gram started among the previous 100 positions": lambda x: repetition_rate(x, 100, 4),
    "3-gram among the previous 50 positions": lambda x: repetition_rate(x, 50, 3),
    "3-gram among the previous 200 positions": lambda x: repetition_rate(x, 200, 3),
    "3-gram anywhere before (window = L)": lambda x: repetition_rate(x, len(x), 3),
    "immediate repeat x_i = x_(i-1)": lambda x: repetition_rate(x, 1, 1),
    "seq-rep-2, whole sample": lambda x: seq_rep(x, 2),
    "seq-rep-3, whole sample": lambda x: seq_rep(x, 3),
    "seq-rep-4, whole sample": lambda x: seq_rep(x, 4),
    "seq-rep-1 per 100-token window, averaged": windowed(lambda w: seq_rep(w, 1)),
    "seq-rep-2 per 100-token window, averaged": windowed(lambda w: seq_rep(w, 2)),
    "seq-rep-3 per 100-token window, averaged": windowed(lambda w: seq_rep(w, 3)),
    "literal, per 100-token window, averaged": windowed(lambda w: repetition_rate(w, 100, 1)),
}


def row(name: str, values, paper: tuple[float, float]) -> str:
    mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
    return f"| {name} | {mean:.3f} ± {std:.3f} | {(mean - paper[0]) / paper[1]:+.1f} | {std / paper[1]:.1f} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("text", help="OpenWebText sample, plain text")
    p.add_argument("--length", type=int, default=1024)
    args = p.parse_args()
    blocks, info = load_token_blocks(args.text, args.length, None, get_tokenizer())
    rows = [list(map(int, b)) for b in blocks]
    print(f"{info['n_blocks']} blocks of {args.length} tokens, sha256 of the text {info['sha256'][:16]}\n")
    print("| metric | value (mean ± std over blocks) | (mean − paper) / paper std | std / paper std |")
    print("|---|---|---|---|")
    print(row("unique unigrams |set(x)|/L (paper 0.49 ± 0.07)", [unique_unigram_fraction(r) for r in rows], PAPER_OWT["unique"]))
    print(row("unigram entropy, nats (paper 5.14 ± 0.31)", [unigram_entropy(r) for r in rows], PAPER_OWT["entropy"]))
    for length in (512, 700):
        print(row(f"unique unigrams of the first {length} tokens", [unique_unigram_fraction(r[:length]) for r in rows],
                  PAPER_OWT["unique"]))
        print(row(f"unigram entropy of the first {length} tokens", [unigram_entropy(r[:length]) for r in rows],
                  PAPER_OWT["entropy"]))
    for name, metric in CANDIDATES.items():
        print(row(f"repetition: {name} (paper 0.033 ± 0.013)", [metric(r) for r in rows], PAPER_OWT["repetition"]))


if __name__ == "__main__":
    main()
