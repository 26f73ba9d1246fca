"""MAUVE and continuation perplexity of prompted generation (Tables 5–6, docs/evaluation-fidelity.md, "MAUVE").

Prompts are the first `prompt_len` (50) GPT-2 tokens of held-out documents with at least prompt_len + gen_len tokens;
the references are the first prompt_len + gen_len tokens of the same documents. The model writes `gen_len` (50)
tokens after each prompt: GPT-2 by ancestral sampling (top_k=0), SEDD on a `canvas`-token canvas with the prompt
clamped at positions 0..prompt_len−1 (gen-100: canvas 100; gen-1024: the full context, positions prompt_len..99 kept).

Features (`features`):
- "text" (default; the paper's "default parameters of MAUVE with max sequence length of 100 tokens, averaged over 5
  seeds"): references and generations are decoded to text and mauve-text featurises them itself, re-tokenising with
  the judge's tokenizer and truncating to `max_text_length` (100) tokens; every other argument at mauve-text's
  default (buckets 'auto', scaling 5, ...). Exactly `mauve.compute_mauve(p_text=..., q_text=...,
  featurize_model_name=judge, max_text_length=100, seed=s)`, with the featurisation done once for all seeds.
- "ids": the judge's last-layer hidden state at the last token of the raw ids, computed here (a diffusion model's
  ids need not be the canonical tokenisation of their own text, so this is a different number).
MAUVE is mean ± std over seeds. Continuation perplexity is the judge's perplexity of the generated ids given the prompt.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .common import (LoadedModel, ShardCache, ar_token_nll, check_token_ids, derived_seed, fmt_pm, markdown_table,
                     mean_std, sha256_file)
from .diversity import unigram_entropy


@dataclass
class MauveSettings:
    prompt_len: int = 50
    gen_len: int = 50
    canvas: int = 100  # SEDD canvas size (100 = gen-100, 1024 = gen-1024); GPT-2 ignores it
    n_prompts: int = 1024
    samples_per_prompt: int = 1
    seed: int = 0
    mauve_seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    num_buckets: int | None = None  # None: mauve-text's 'auto', max(2, round(min(n_p, n_q) / 10)), recorded
    scaling_factor: float = 5.0  # mauve-text's default
    features: str = "text"  # "text": mauve-text's own featurisation of decoded text (the paper); "ids": raw token ids
    max_text_length: int = 100  # text features: mauve-text truncates the re-tokenised text to this many tokens
    steps: int = 100  # SEDD sampler steps
    categorical: str = "float64"  # SEDD's categorical draw (pysedd.ops.categorical.CATEGORICAL)
    batch_size: int = 16
    shard_size: int = 64  # prompts per resumable generation shard
    field: str = "text"


def load_prompts(path: str, settings: MauveSettings, tokenizer) -> tuple[np.ndarray, dict]:
    """References [n, prompt_len + gen_len] from the first documents that are long enough, + provenance."""
    from ..data import file_rows

    path_obj = Path(path)
    if not path_obj.is_file():
        raise UserError(f"prompt file not found: {path}")
    if path_obj.stat().st_size == 0:
        raise UserError(f"prompt file {path} is empty")
    if settings.prompt_len < 1 or settings.gen_len < 1:
        raise UserError("prompt_len and gen_len must be positive")
    need = settings.prompt_len + settings.gen_len
    first = path_obj.read_text().lstrip().split("\n", 1)[0] if path_obj.suffix == ".jsonl" else ""
    if first.startswith("{") and "ids" in json.loads(first):  # token ids given (e.g. the workflow's prompt windows)
        docs = [json.loads(line)["ids"] for line in path_obj.read_text().splitlines() if line.strip()]
    else:
        docs = tokenizer.encode_batch(list(file_rows(path_obj, "jsonl" if path_obj.suffix == ".jsonl" else "lines",
                                                     settings.field)))
    refs, n_short = [], 0
    for ids in docs:
        if len(ids) < need:
            n_short += 1
            continue
        refs.append(ids[:need])
        if len(refs) == settings.n_prompts:
            break
    if not refs:
        raise UserError(f"no document in {path} has the {need} tokens needed for a {settings.prompt_len}-token prompt "
                        f"and a {settings.gen_len}-token reference continuation ({n_short} too short)")
    info = {"path": str(path_obj.resolve()), "sha256": sha256_file(path_obj), "field": settings.field,
            "n_prompts": len(refs), "skipped_short_docs": n_short, "reference_len": need}
    return np.asarray(refs, dtype=np.int64), info


@torch.no_grad()
def generate(lm: LoadedModel, prompts: torch.Tensor, settings: MauveSettings, seed: int) -> torch.Tensor:
    """[B, prompt_len + gen_len]: each prompt followed by gen_len generated tokens."""
    if lm.kind == "gpt2":
        from ..ar import ar_sample

        out = ar_sample(lm.model, len(prompts), settings.gen_len, prompt_ids=prompts, top_k=0, seed=seed)
        return out.samples.cpu()
    from ..sampling import Conditioning, pc_sample

    prompts = prompts.to(lm.device)
    generator = torch.Generator(device=lm.device).manual_seed(seed)
    out = pc_sample(lm.model, lm.graph, lm.noise, len(prompts), settings.canvas, settings.steps, generator=generator,
                    conditioning=Conditioning.prefix(prompts.tolist()), categorical=settings.categorical)
    return out.samples[:, : settings.prompt_len + settings.gen_len].cpu()


@torch.no_grad()
def judge_features(judge: LoadedModel, ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Last-layer hidden state at the last token of each row (float32 [N, D])."""
    feats = []
    for i in range(0, len(ids), batch_size):
        x = torch.from_numpy(ids[i:i + batch_size]).to(judge.device)
        h = judge.model(input_ids=x, output_hidden_states=True).hidden_states[-1][:, -1]
        feats.append(h.float().cpu().numpy())
    return np.concatenate(feats)


def mauve_scores(p_features: np.ndarray, q_features: np.ndarray, seeds, num_buckets: int, scaling_factor: float) -> list[float]:
    import mauve

    return [float(mauve.compute_mauve(p_features=p_features, q_features=q_features, num_buckets=num_buckets,
                                      mauve_scaling_factor=scaling_factor, seed=s, verbose=False).mauve) for s in seeds]


FEATURES = ("text", "ids")


def featurizer_name(judge: LoadedModel) -> str:
    """What mauve-text hands to transformers' Auto*.from_pretrained: the judge's hub id (read from the local HF cache
    when offline) or its directory."""
    local = judge.fingerprint.get("path") if isinstance(judge.fingerprint, dict) else None
    return str(local) if local and Path(local).is_dir() else judge.source


def text_features(texts: list[str], featurizer: str, max_text_length: int, device_id: int) -> np.ndarray:
    """mauve-text's own featurisation (its tokenizer, truncation and model loading), with all its defaults.

    mauve-text loads only names containing 'gpt2' or 'bert'; a directory named otherwise is given through a symlink
    whose name says gpt2 (transformers reads the directory's config either way)."""
    compute = importlib.import_module("mauve.compute_mauve")
    with tempfile.TemporaryDirectory() as tmp:
        name = featurizer
        if "gpt2" not in name and "bert" not in name:
            if not Path(name).is_dir():
                raise UserError(f"mauve-text featurises only with models whose name contains 'gpt2' or 'bert'; "
                                f"got judge {featurizer!r}")
            name = os.path.join(tmp, "gpt2-featurizer")
            os.symlink(Path(featurizer).resolve(), name)
        try:
            return compute.get_features_from_input(None, None, texts, name, max_text_length, device_id, name="text",
                                                   batch_size=1)
        except OSError as e:
            raise UserError(f"mauve-text cannot load featurizer {featurizer!r}: {str(e).splitlines()[0]}") from None


def text_mauve_scores(p_text: list[str], q_text: list[str], featurizer: str, seeds, max_text_length: int,
                      num_buckets: int | None = None, scaling_factor: float = 5.0,
                      device_id: int = -1) -> tuple[list[float], int]:
    """`mauve.compute_mauve(p_text, q_text, featurize_model_name, max_text_length, seed=s)` for each seed, every other
    argument at mauve-text's default (num_buckets None = 'auto', scaling 5); returns the scores and the bucket count
    mauve used. Featurisation does not depend on the seed, so it runs once."""
    import mauve

    p = text_features(p_text, featurizer, max_text_length, device_id)
    q = text_features(q_text, featurizer, max_text_length, device_id)
    outs = [mauve.compute_mauve(p_features=p, q_features=q, num_buckets=num_buckets or "auto",
                                mauve_scaling_factor=scaling_factor, seed=s, verbose=False)
            for s in seeds]
    return [float(o.mauve) for o in outs], int(outs[0].num_buckets)


def default_buckets(n_refs: int, n_gens: int) -> int:
    """mauve's 'auto' rule made explicit, so it can be recorded and held fixed across models."""
    return max(2, int(round(min(n_refs, n_gens) / 10)))


def continuation_ppl(judge: LoadedModel, generations: np.ndarray, prompt_len: int, batch_size: int) -> dict:
    nll = np.concatenate([ar_token_nll(judge.model, torch.from_numpy(generations[i:i + batch_size]))[:, prompt_len - 1:].cpu().numpy()
                          for i in range(0, len(generations), batch_size)])
    per_sample = nll.mean(axis=1)
    return {"mean_then_exp": math.exp(float(nll.mean())), "exp_then_mean": float(np.mean(np.exp(per_sample))),
            "n_tokens": int(nll.size)}


def evaluate(lm: LoadedModel | None, judge: LoadedModel, refs: np.ndarray, settings: MauveSettings, out_path: str,
             samples: np.ndarray | None = None, resume: bool = True, progress: bool = True, tokenizer=None) -> dict:
    """Generate (or take `samples`), featurise (text or ids), MAUVE over seeds, continuation perplexity."""
    P, G = settings.prompt_len, settings.gen_len
    if settings.features not in FEATURES:
        raise UserError(f"MAUVE features must be one of {', '.join(FEATURES)}, got {settings.features!r}")
    if settings.max_text_length < 1:
        raise UserError(f"max_text_length must be >= 1, got {settings.max_text_length}")
    if judge.max_length < P + G:
        raise UserError(f"prompt + continuation ({P + G} tokens) is longer than the judge's context of {judge.max_length}")
    k = settings.samples_per_prompt
    if samples is not None:  # as many continuations per prompt as the file holds
        if len(samples) % len(refs):
            raise UserError(f"{len(samples)} samples are not a whole number of continuations of the {len(refs)} prompts")
        k = len(samples) // len(refs)
    prompts = np.tile(refs[:, :P], (k, 1))  # row i continues prompt i mod n, the order `pysedd sample` writes
    if samples is None:
        if lm is None:
            raise UserError("give a model to generate with, or pre-generated samples")
        length = settings.canvas if lm.kind == "sedd" else P + G
        if length > lm.max_length:
            raise UserError(f"a {length}-token {'canvas' if lm.kind == 'sedd' else 'prompt + continuation'} is longer "
                            f"than the model's context of {lm.max_length} tokens")
        if lm.kind == "sedd" and settings.canvas < P + G:
            raise UserError(f"canvas {settings.canvas} cannot hold the {P}-token prompt and {G} generated tokens")
        cache = ShardCache(out_path, {"eval": "mauve-generations", "model": lm.fingerprint, "kind": lm.kind,
                                      "prompts_sha256": hashlib.sha256(prompts.tobytes()).hexdigest(),
                                      "P": P, "G": G, "canvas": settings.canvas, "steps": settings.steps,
                                      "categorical": settings.categorical,
                                      "seed": settings.seed, "shard_size": settings.shard_size,
                                      "batch_size": settings.batch_size}, enabled=resume)
        starts = list(range(0, len(prompts), settings.shard_size))

        def compute(shard: int) -> list:
            block = prompts[starts[shard]:starts[shard] + settings.shard_size]
            rows = []
            for i in range(0, len(block), settings.batch_size):
                batch_seed = derived_seed(settings.seed, starts[shard] + i)
                rows += generate(lm, torch.from_numpy(block[i:i + settings.batch_size]), settings, batch_seed).tolist()
            return rows

        shards = cache.run([f"prompts_{s:07d}" for s in starts], compute, desc=f"generating ({lm.kind})", progress=progress)
        generations = np.asarray([row for s in shards for row in s], dtype=np.int64)
    else:
        if samples.shape[0] != len(prompts) or samples.shape[1] < P + G:
            raise UserError(f"samples have shape {samples.shape}; expected [{len(prompts)}, >= {P + G}] "
                            f"({len(refs)} prompts x {k} samples per prompt)")
        generations = samples[:, : P + G]
        if not np.array_equal(generations[:, :P], prompts):
            raise UserError("the samples do not start with the prompts of this prompt file (same file, prompt length and order?)")
    check_token_ids(generations, judge.model.config.vocab_size, "generations")
    if settings.features == "text":
        if tokenizer is None:
            from ..tokenizer import get_tokenizer

            tokenizer = get_tokenizer()
        device_id = (judge.device.index or 0) if judge.device.type == "cuda" else -1
        scores, buckets = text_mauve_scores([tokenizer.decode(r.tolist()) for r in refs],
                                            [tokenizer.decode(g.tolist()) for g in generations], featurizer_name(judge),
                                            settings.mauve_seeds, settings.max_text_length, settings.num_buckets,
                                            settings.scaling_factor, device_id)
        protocol = {"features": "text", "featurizer": featurizer_name(judge), "max_text_length": settings.max_text_length,
                    "call": "mauve.compute_mauve(p_text=decoded references, q_text=decoded prompt+generation, "
                            "featurize_model_name=judge, max_text_length, seed=s), other arguments at mauve-text's defaults",
                    "num_buckets": settings.num_buckets or "auto"}
    else:
        p_feat = judge_features(judge, refs, settings.batch_size)
        q_feat = judge_features(judge, generations, settings.batch_size)
        buckets = settings.num_buckets or default_buckets(len(p_feat), len(q_feat))
        scores = mauve_scores(p_feat, q_feat, settings.mauve_seeds, buckets, settings.scaling_factor)
        protocol = {"features": "ids", "featurizer": judge.source,
                    "call": "judge's last-layer hidden state at the last raw token id, mauve.compute_mauve(p_features, "
                            "q_features, num_buckets, mauve_scaling_factor, seed=s)",
                    "num_buckets": settings.num_buckets or "max(2, round(min(n_p, n_q) / 10))"}
    protocol.update(scaling_factor=settings.scaling_factor, seeds=list(settings.mauve_seeds), reference="first prompt_len + gen_len tokens of each document",
                    generation="prompt + gen_len generated tokens")
    return {
        "mauve": {**mean_std(scores), "per_seed": dict(zip(map(str, settings.mauve_seeds), scores)),
                  "num_buckets": buckets, "scaling_factor": settings.scaling_factor,
                  "n_p": int(len(refs)), "n_q": int(len(generations)), "featurizer": protocol["featurizer"],
                  "samples_per_prompt": k, "features": settings.features},
        "protocol": protocol,
        "continuation_ppl": continuation_ppl(judge, generations, P, settings.batch_size),
        "continuation_entropy": mean_std([unigram_entropy(row[P:].tolist()) for row in generations]),
        "generations": generations[:, P:].tolist(),
    }


def table(rows: list[tuple[str, dict]]) -> str:
    """Tables 5–6: MAUVE (mean ± std over seeds) and continuation perplexity per model and canvas setting."""
    body = [[name, fmt_pm(r["mauve"], 3), f"{r['continuation_ppl']['mean_then_exp']:.2f}",
             fmt_pm(r["continuation_entropy"], 2)] for name, r in rows]
    return markdown_table(["model (setting)", "MAUVE", "cont. PPL", "entropy"], body) + (
        "\n\nMAUVE mean ± std over seeds (features: decoded text featurised by mauve-text, or raw ids, as each "
        "result's protocol records); continuation PPL of the generated tokens under the judge, mean-then-exp.")
