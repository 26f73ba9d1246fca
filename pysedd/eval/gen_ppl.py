"""Generative perplexity (Table 3): unconditional samples scored by a judge AR model, with their unigram entropy beside
the number (low-entropy, repetitive text gets a low perplexity).

The judge scores the raw sampled ids (no retokenisation) except in mode (c). Aggregation modes
(docs/evaluation-protocol.md#generative-perplexity):
  (a) exp-then-mean: mean over samples of exp(per-sample mean NLL of tokens 2..L)         [SEDD run_train.py]
  (b) mean-then-exp: exp(mean over samples of the per-sample mean NLL)         (default)  [SDTT]
  (c) token-weighted: decode, retokenise for the judge, truncate to its context; corpus mean NLL over tokens up to
      and including the first EOS                                                          [MDLM, Duo]
  (d) batch-level exp-then-mean: EOS targets excluded, samples with unigram entropy below a threshold dropped,
      exp(mean NLL of a batch) averaged over batches                                       [BD3-LM, without redraws]
Rows longer than the judge's context are scored with a sliding window.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from .common import LoadedModel, ShardCache, ar_token_nll, check_token_ids, fmt_pm, markdown_table, setting_name
from .diversity import unigram_entropy

MODES = ("a", "b", "c", "d")
MODE_NAMES = {"a": "exp-then-mean per sample", "b": "mean-then-exp per sample", "c": "token-weighted, retokenised",
              "d": "batch-level exp-then-mean, EOS excluded"}


@dataclass
class GenPPLSettings:
    modes: tuple[str, ...] = ("b", "a")  # the first is the primary number
    batch_size: int = 8
    shard_size: int = 64  # samples per resumable shard
    min_entropy: float = 0.0  # mode (d): drop samples whose unigram entropy is below this (nats)
    limit: int | None = None


def _sample_stats(judge: LoadedModel, ids: torch.Tensor, eos_id: int) -> list[list[float]]:
    """Per sample: [Σ NLL tokens 2..L, count, Σ NLL over non-EOS targets, count non-EOS]."""
    nll = ar_token_nll(judge.model, ids).cpu()
    keep = (ids[:, 1:] != eos_id)
    return [[float(n.sum()), int(n.numel()), float(n[k].sum()), int(k.sum())] for n, k in zip(nll, keep)]


def _retokenised_stats(judge: LoadedModel, ids: np.ndarray, tokenizer) -> list[list[float]]:
    """Mode (c) per sample: [Σ NLL, count] over the retokenised text, up to and including the first EOS."""
    out = []
    for row in ids:
        tokens = tokenizer.encode(tokenizer.decode(row.tolist()))[: judge.max_length]
        if len(tokens) < 2:
            out.append([0.0, 0])
            continue
        x = torch.tensor([tokens])
        nll = ar_token_nll(judge.model, x)[0].cpu()
        targets = x[0, 1:]
        eos = (targets == tokenizer.eos_id).nonzero()
        end = int(eos[0]) + 1 if len(eos) else len(targets)
        out.append([float(nll[:end].sum()), end])
    return out


def evaluate_samples(judge: LoadedModel, samples: np.ndarray, meta: dict, fingerprint: dict, settings: GenPPLSettings,
                     tokenizer, out_path: str, resume: bool = True, progress: bool = True) -> dict:
    """Every requested aggregation mode, the unigram entropy and the per-sample numbers for one samples file."""
    for m in settings.modes:
        if m not in MODES:
            raise UserError(f"unknown gen-PPL mode {m!r}; choose from {', '.join(MODES)}")
    if settings.limit is not None:
        samples = samples[: settings.limit]
    check_token_ids(samples, judge.model.config.vocab_size, fingerprint["path"])
    cache = ShardCache(out_path, {"eval": "gen-ppl", "judge": judge.fingerprint, "samples": fingerprint,
                                  "limit": settings.limit, "shard_size": settings.shard_size,
                                  "retokenise": "c" in settings.modes}, enabled=resume)
    starts = list(range(0, len(samples), settings.shard_size))

    def compute(shard: int) -> dict:
        block = samples[starts[shard]:starts[shard] + settings.shard_size]
        stats = []
        for i in range(0, len(block), settings.batch_size):
            stats += _sample_stats(judge, torch.from_numpy(block[i:i + settings.batch_size]), tokenizer.eos_id)
        result = {"stats": stats}
        if "c" in settings.modes:
            result["retokenised"] = _retokenised_stats(judge, block, tokenizer)
        return result

    name = meta.get("name") or fingerprint["path"]
    shards = cache.run([f"samples_{s:07d}" for s in starts], compute, desc=f"gen-ppl {name}", progress=progress)
    stats = np.array([row for s in shards for row in s["stats"]], dtype=np.float64)
    entropy = np.array([unigram_entropy(row.tolist()) for row in samples])
    mean_nll = stats[:, 0] / stats[:, 1]
    metrics: dict = {}
    if "a" in settings.modes:
        metrics["a"] = float(np.mean(np.exp(mean_nll)))
    if "b" in settings.modes:
        metrics["b"] = math.exp(float(np.mean(mean_nll)))
    if "c" in settings.modes:
        retok = np.array([row for s in shards for row in s["retokenised"]], dtype=np.float64)
        metrics["c"] = math.exp(retok[:, 0].sum() / retok[:, 1].sum())
    if "d" in settings.modes:
        kept = np.nonzero(entropy >= settings.min_entropy)[0]
        batch_ppl = []
        for i in range(0, len(kept), settings.batch_size):
            rows = stats[kept[i:i + settings.batch_size]]
            if rows[:, 3].sum() > 0:
                batch_ppl.append(math.exp(rows[:, 2].sum() / rows[:, 3].sum()))
        metrics["d"] = float(np.mean(batch_ppl)) if batch_ppl else float("nan")
        metrics["d_rejected_samples"] = int(len(samples) - len(kept))
    return {
        "samples": {**fingerprint, "meta": meta, "n_samples": int(len(samples)), "length": int(samples.shape[1])},
        "primary_mode": settings.modes[0],
        "gen_ppl": metrics[settings.modes[0]],
        "modes": metrics,
        "unigram_entropy": {"mean": float(entropy.mean()), "std": float(entropy.std(ddof=1)) if len(entropy) > 1 else 0.0},
        "per_sample": {"mean_nll": mean_nll.tolist(), "unigram_entropy": entropy.tolist()},
    }


def protocol(settings: GenPPLSettings) -> dict:
    """How the numbers of a gen-PPL result were computed."""
    return {"primary_mode": settings.modes[0], "modes": {m: MODE_NAMES[m] for m in settings.modes},
            "scored": "raw sampled ids, tokens 2..L, sliding window past the judge's context"
                      + ("; mode (c) decodes and re-tokenises" if "c" in settings.modes else ""),
            "entropy": "unigram entropy of the raw ids per sample, nats", "min_entropy_mode_d": settings.min_entropy}


def table(results: list[dict], settings: GenPPLSettings) -> str:
    """Table 3: one row per sampler setting; the primary mode first, the other modes after the entropy."""
    primary, others = settings.modes[0], settings.modes[1:]
    header = ["samples", "N", f"Gen PPL ({primary})", "entropy"] + [f"Gen PPL ({m})" for m in others]
    body = [[setting_name(r["samples"]["meta"], r["samples"]["path"]), r["samples"]["n_samples"],
             f"{r['modes'][primary]:.2f}", fmt_pm(r["unigram_entropy"], 2)] + [f"{r['modes'][m]:.2f}" for m in others]
            for r in results]
    notes = "; ".join(f"({m}) {MODE_NAMES[m]}" for m in settings.modes)
    return markdown_table(header, body) + f"\n\nModes: {notes}. Entropy: unigram, nats, mean ± std over samples."
