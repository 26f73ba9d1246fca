"""Zero-shot perplexity (Table 1): LAMBADA, WikiText-2, PTB, WikiText-103 and 1BW, packed the way SEDD packs them.

Each row is detokenised, GPT-2-tokenised and followed by one EOS; rows are concatenated and cut into non-overlapping
`seq_len`-token chunks (remainder dropped, no BOS) by `pysedd.data`. SEDD scores every token of a chunk with the
Monte-Carlo NELBO (an upper bound on the NLL, so its perplexity is marked ≤); GPT-2 scores the same chunks exactly.
GPT-2's first token has no context: by default ("skip") each chunk's tokens 2..L are scored (L−1 per chunk); with
"eos" the chunks hold L−1 tokens and EOS is prepended as the first token's context.
Both aggregation orders are reported (docs/evaluation-protocol.md#scoring-and-aggregation):
mean-then-exp (primary) and exp-then-mean.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .common import LoadedModel, ShardCache, ar_token_nll, derived_seed, markdown_table

DATASETS = ("lambada", "wikitext2", "ptb", "wikitext103", "lm1b")
COLUMNS = {"lambada": "LAMBADA", "wikitext2": "WikiText2", "ptb": "PTB", "wikitext103": "WikiText103", "lm1b": "1BW"}
AR_FIRST_TOKEN = ("skip", "eos")


@dataclass
class ZeroShotSettings:
    seq_len: int = 1024
    split: str = "test"
    n_samples: int = 128  # Monte-Carlo draws of t per chunk (SEDD)
    sampling_eps: float = 1e-3
    stratified: bool = True
    seed: int = 0
    batch_size: int = 16  # SEDD: MC draws per forward; GPT-2: chunks per forward
    ar_first_token: str = "skip"
    limit: int | None = None  # score only the first `limit` chunks (quick runs; recorded)
    shard_size: int = 8  # chunks per resumable shard
    chunking: str = "concat"  # "concat": one concatenation (the spec); "sedd": as SEDD's data.py (datasets map batches)


def load_chunks(dataset: str, paths: list[str], settings: ZeroShotSettings, seq_len: int, tokenizer) -> tuple[np.ndarray, dict]:
    """[n_chunks, seq_len] int64 token blocks of a named corpus (hub, or local files in its format) + provenance."""
    from ..data import open_corpus, pack_texts

    corpus = open_corpus(dataset, paths, split=settings.split)
    blocks = pack_texts(corpus.texts(), tokenizer, seq_len, chunking=settings.chunking)
    if len(blocks) == 0:
        raise UserError(f"dataset {dataset!r} gives no complete {seq_len}-token chunk (empty or too short)")
    if settings.limit is not None:
        blocks = blocks[: settings.limit]
    info = {
        "dataset": dataset,
        "split": settings.split,
        "source": corpus.source,
        "chunk_len": seq_len,
        "chunking": settings.chunking,
        "n_chunks": int(len(blocks)),
        "tokens_sha256": hashlib.sha256(np.ascontiguousarray(blocks, dtype=np.int64).tobytes()).hexdigest(),
    }
    return blocks, info


def score_sedd(lm: LoadedModel, chunk: torch.Tensor, settings: ZeroShotSettings, seed: int) -> tuple[float, float, int]:
    from ..likelihood import sequence_nelbo

    res = sequence_nelbo(lm.model, lm.graph, lm.noise, chunk.to(lm.device), n_samples=settings.n_samples,
                         stratified=settings.stratified, seed=seed, sampling_eps=settings.sampling_eps,
                         batch_size=settings.batch_size)
    return float(res.nelbo[0]), float(res.stderr[0]), int(res.n_tokens[0])


def score_ar(lm: LoadedModel, chunks: torch.Tensor, settings: ZeroShotSettings) -> list[tuple[float, float, int]]:
    from ..tokenizer import EOS_ID

    if settings.ar_first_token == "eos":
        chunks = torch.cat([torch.full((chunks.shape[0], 1), EOS_ID, dtype=chunks.dtype), chunks], dim=1)
    nll = ar_token_nll(lm.model, chunks.to(lm.device))
    return [(float(row.sum()), 0.0, int(row.numel())) for row in nll.cpu()]


def packed_chunks(directory: str, split: str, limit: int | None) -> tuple[np.ndarray, dict]:
    """The blocks of a `pysedd prepare`d directory (already packed the SEDD way) + provenance."""
    from ..data import PackedDataset

    ds = PackedDataset(directory, split)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise UserError(f"{directory} split {split!r} holds no blocks")
    blocks = ds.batch(list(range(n))).numpy()
    info = {"prepared_dir": str(Path(directory).resolve()), "split": split, "chunk_len": ds.seq_len, "n_chunks": n,
            "source": ds.manifest.get("request", {}).get("source"),
            "split_sha256": ds.manifest["splits"][split]["sha256"], "rows_sha256": ds.manifest.get("rows_sha256"),
            "tokens_sha256": hashlib.sha256(np.ascontiguousarray(blocks, dtype=np.int64).tobytes()).hexdigest()}
    return blocks, info


def evaluate_dataset(lm: LoadedModel, dataset: str, paths: list[str], settings: ZeroShotSettings, tokenizer,
                     out_path: str, resume: bool = True, progress: bool = True, prepared_dir: str | None = None) -> dict:
    """Table 1 numbers of one dataset: a named corpus (hub, or `paths` in its format) or a prepared directory."""
    if settings.ar_first_token not in AR_FIRST_TOKEN:
        raise UserError(f"ar_first_token must be one of {AR_FIRST_TOKEN}, got {settings.ar_first_token!r}")
    eos_context = lm.kind == "gpt2" and settings.ar_first_token == "eos"
    if settings.seq_len > lm.max_length:
        raise UserError(f"{settings.seq_len}-token chunks are longer than the model's context of {lm.max_length} tokens")
    if prepared_dir is not None:
        if eos_context:
            raise UserError("--ar-first-token eos needs chunks of seq-len - 1 tokens; a prepared directory has fixed "
                            "blocks: use --ar-first-token skip, or give the text")
        blocks, data_info = packed_chunks(prepared_dir, settings.split, settings.limit)
        if blocks.shape[1] != settings.seq_len:
            raise UserError(f"{prepared_dir} holds {blocks.shape[1]}-token blocks, not {settings.seq_len}")
        data_info["dataset"] = dataset
    else:  # GPT-2 with an EOS context sees chunks one token shorter, so that EOS + chunk fits its context
        blocks, data_info = load_chunks(dataset, paths, settings, settings.seq_len - eos_context, tokenizer)
    return score_blocks(lm, torch.from_numpy(blocks), data_info, settings, out_path, resume, progress)


def score_blocks(lm: LoadedModel, blocks: torch.Tensor, data_info: dict, settings: ZeroShotSettings, out_path: str,
                 resume: bool, progress: bool) -> dict:
    from ..likelihood import perplexity

    shard_keys = [f"chunks_{i:06d}" for i in range(0, len(blocks), settings.shard_size)]
    cache = ShardCache(out_path, {"eval": "zero-shot", "model": lm.fingerprint, "data": data_info, "kind": lm.kind,
                                  **asdict(settings), "shard_size": settings.shard_size}, enabled=resume)

    def compute(shard: int) -> list:
        lo = shard * settings.shard_size
        chunk = blocks[lo:lo + settings.shard_size]
        if lm.kind == "sedd":  # one seed per chunk: a chunk's number does not depend on the sharding
            return [score_sedd(lm, chunk[i:i + 1], settings, derived_seed(settings.seed, lo + i)) for i in range(len(chunk))]
        rows = []
        for i in range(0, len(chunk), settings.batch_size):
            rows += score_ar(lm, chunk[i:i + settings.batch_size], settings)
        return rows

    shards = cache.run(shard_keys, compute, desc=f"{data_info['dataset']} ({lm.kind})", progress=progress)
    per_chunk = [row for shard in shards for row in shard]
    metrics = {"bound": lm.kind == "sedd", **perplexity([r[0] for r in per_chunk], [r[2] for r in per_chunk])}
    if lm.kind == "sedd":  # standard error of Σ NELBO / Σ n from the per-chunk MC errors (chunks independent)
        metrics["nll_per_token_stderr"] = float(np.sqrt(np.sum(np.square([r[1] for r in per_chunk]))) / metrics["n_tokens"])
    return {"data": data_info, "metrics": metrics,
            "per_chunk": [{"nll": r[0], "stderr": r[1], "n_tokens": r[2]} for r in per_chunk]}


def scoring_note(kind: str, settings: ZeroShotSettings) -> str:
    if kind == "sedd":
        return (f"SEDD NELBO upper bound (≤): {settings.n_samples} {'stratified ' if settings.stratified else ''}MC draws "
                f"of t per chunk, t in [{settings.sampling_eps}, 1], seed derived from {settings.seed} and the chunk index; all tokens scored")
    if settings.ar_first_token == "skip":
        return f"GPT-2 exact: tokens 2..{settings.seq_len} of each {settings.seq_len}-token chunk scored (first token has no context)"
    return f"GPT-2 exact: EOS prepended to each {settings.seq_len - 1}-token chunk as the first token's context; all chunk tokens scored"


def protocol(kind: str, settings: ZeroShotSettings) -> dict:
    """How the numbers of a zero-shot result were computed."""
    return {"likelihood": scoring_note(kind, settings), "bound": kind == "sedd",
            "chunking": settings.chunking, "chunk_len": settings.seq_len, "split": settings.split,
            "packing": "rows detokenised, GPT-2-tokenised, one EOS appended each, concatenated, cut into non-overlapping "
                       "chunks, remainder dropped, no BOS",
            "primary": "mean_then_exp", "also": "exp_then_mean",
            **({"n_samples": settings.n_samples, "stratified": settings.stratified, "sampling_eps": settings.sampling_eps,
                "seed": settings.seed} if kind == "sedd" else {"ar_first_token": settings.ar_first_token})}


def table(results: list[dict]) -> str:
    """Table 1: one row per model, one column per dataset; ≤ marks a diffusion bound; exp-then-mean in brackets."""
    datasets = [d for d in DATASETS if any(d in r["datasets"] for r in results)]
    datasets += sorted({d for r in results for d in r["datasets"]} - set(datasets))
    rows = []
    for r in results:
        row = [r["model"]["source"]]
        for d in datasets:
            m = r["datasets"].get(d, {}).get("metrics")
            if m is None:
                row.append("–")
                continue
            mark = "≤" if m["bound"] else ""
            row.append(f"{mark}{m['mean_then_exp']:.2f} ({mark}{m['exp_then_mean']:.2f})")
        rows.append(row)
    header = ["model"] + [COLUMNS.get(d, d) for d in datasets]
    return markdown_table(header, rows) + "\n\nPerplexity mean-then-exp (exp-then-mean in brackets). ≤: SEDD ELBO bound."
