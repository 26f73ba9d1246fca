"""`pysedd bench latency`: the paper's Figure 1 / Table 7. Wall time to generate B sequences of L tokens with SEDD
at several step counts (and with the exact first-hitting sampler) against a GPT-2 of matching size decoding with its
KV cache; warm-ups, device-synchronised timing, mean +- std over repeats, tokens/s, NFE; JSON, markdown, PNG."""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from .. import results as records
from ..defaults import LATENCY
from ..errors import UserError
from ..io import atomic_path, atomic_write_text, require_output_files

# Named setups; command-line flags override their fields.
SETUPS = {
    # Table 7 of Deschenaux & Gulcehre (2024): ~1.45B SEDD vs ~1.3B GPT-2, 2048 tokens, batch 1, A100 (bf16 on GPU).
    "table7": dict(sedd="large-1.45b", gpt2="large-1.3b", length=2048, batch_size=1, steps=[64, 128, 256, 512, 1024],
                   repeats=20, fhs=False),
    # The same comparison at CPU size (random weights: latency does not depend on them).
    "cpu-tiny": dict(sedd="tiny", gpt2="tiny", length=64, batch_size=2, steps=[64, 128, 256, 512, 1024], repeats=3,
                     fhs=True),
}
# Without --setup: Table 7's shape (pysedd/defaults.py, the workflow's `latency` defaults) on the random-weight presets.
DEFAULTS = dict(sedd="tiny", gpt2="tiny",
                **{k: LATENCY[k] for k in ("length", "batch_size", "steps", "repeats", "fhs")})


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks (latency: SEDD vs GPT-2 with KV cache)",
                              description="Benchmarks that print their figures and write JSON.")
    sub = p.add_subparsers(title="benchmarks", metavar="<benchmark>", required=True)
    q = sub.add_parser(
        "latency",
        help="SEDD at several step counts (and FHS) vs GPT-2 with KV cache: wall time for B x L tokens",
        description="Figure 1 / Table 7 of Deschenaux & Gulcehre (2024). --sedd/--gpt2 take a checkpoint directory, a "
        "hub id, or a size preset (random weights, fine for latency). Setups: " + ", ".join(
            f"{k} ({v['sedd']} vs {v['gpt2']}, L={v['length']}, B={v['batch_size']})" for k, v in SETUPS.items()),
    )
    q.add_argument("--setup", choices=tuple(SETUPS), default=None, help="named configuration (flags override it)")
    q.add_argument("--sedd", default=None, help=f"SEDD path, hub id or preset (default {DEFAULTS['sedd']})")
    q.add_argument("--gpt2", default=None, help=f"GPT-2 path, hub id or preset (default {DEFAULTS['gpt2']}); 'none' skips it")
    q.add_argument("--steps", type=int, nargs="+", default=None,
                   help=f"SEDD step counts (default {' '.join(map(str, LATENCY['steps']))})")
    q.add_argument("--sampler", choices=("analytic", "euler"), default=LATENCY["sampler"],
                   help="SEDD step sampler (default analytic)")
    q.add_argument("--fhs", action=argparse.BooleanOptionalAction, default=None, help="also time the first-hitting sampler (L calls)")
    q.add_argument("--batch-size", type=int, default=None,
                   help=f"sequences per forward, B (default {LATENCY['batch_size']})")
    q.add_argument("--length", type=int, default=None, help=f"tokens per sequence, L (default {LATENCY['length']})")
    q.add_argument("--repeats", type=int, default=None,
                   help=f"timed runs per configuration (default {LATENCY['repeats']}; cpu-tiny: 3)")
    q.add_argument("--warmup", type=int, default=LATENCY["warmup"], help="discarded warm-up runs (default 2)")
    q.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 gives steadier CPU timings)")
    q.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")
    q.add_argument("--seed", type=int, default=LATENCY["seed"], help="random seed (default 0)")
    q.add_argument("--out", required=True, help="result JSON")
    q.add_argument("--table", default=None, help="also write a markdown table")
    q.add_argument("--plot", default=None, help="also write a PNG plot")
    q.set_defaults(func=run_latency)

    from .frontier import add_parser as add_frontier

    add_frontier(sub)


def resolve(args) -> dict:
    require_output_files(args, "out", "table", "plot")
    cfg = dict(DEFAULTS, **(SETUPS[args.setup] if args.setup else {}))
    for key in ("sedd", "gpt2", "length", "batch_size", "steps", "repeats", "fhs"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    for key in ("length", "batch_size", "repeats"):
        if cfg[key] < 1:
            raise UserError(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")
    if any(s < 1 for s in cfg["steps"]):
        raise UserError(f"--steps must all be >= 1, got {cfg['steps']}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    return cfg


def measure(fn, warmup: int, repeats: int, batch_tokens: int, desc: str) -> dict:
    from tqdm import tqdm

    for _ in range(warmup):
        fn()
    runs = [fn() for _ in tqdm(range(repeats), desc=desc, unit="run", leave=False)]
    lat = [r.wall_time for r in runs]
    thr = [batch_tokens / t for t in lat]
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    return dict(nfe=runs[0].nfe, mean_latency=statistics.fmean(lat), std_latency=sd(lat),
                mean_throughput=statistics.fmean(thr), std_throughput=sd(thr), latencies=lat)


def run_latency(args: argparse.Namespace) -> int:
    from ..ar import ar_sample
    from ..sampling import fhs_sample, pc_sample
    from ..loader import load, pick_device
    from .sample import device_name

    cfg = resolve(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    B, L = cfg["batch_size"], cfg["length"]
    sedd = load(cfg["sedd"], "sedd", device, length=L)
    sedd.check_length(L, "length")
    model, graph, noise = sedd.model, sedd.graph, sedd.noise
    gen = torch.Generator(device).manual_seed(args.seed)
    rows = []

    def report(row):
        rows.append(row)
        print(f"{row['model']:>5} {row['sampler']:>9} steps={str(row['steps']):>5} nfe={row['nfe']:>5}  "
              f"{row['mean_latency']:.4f} +- {row['std_latency']:.4f} s  {row['mean_throughput']:.1f} tok/s", flush=True)

    for steps in cfg["steps"]:
        stats = measure(lambda m=model: pc_sample(m, graph, noise, B, L, steps, args.sampler, generator=gen),
                        args.warmup, cfg["repeats"], B * L, f"SEDD {steps} steps")
        report(dict(model="sedd", sampler=args.sampler, steps=steps, **stats))
    if cfg["fhs"]:
        stats = measure(lambda m=model: fhs_sample(m, graph, noise, B, L, generator=gen), args.warmup, cfg["repeats"],
                        B * L, "SEDD FHS")
        report(dict(model="sedd", sampler="fhs", steps=None, **stats))
    sedd_info = dict(model=str(cfg["sedd"]), fingerprint=sedd.fingerprint, parameters=model.num_parameters(),
                     non_embedding=model.num_parameters(non_embedding=True))
    del model, sedd

    gpt2_info = None
    if str(cfg["gpt2"]).lower() != "none":
        dtype = torch.bfloat16 if device.type == "cuda" else None  # the protocol's bf16 on GPU; fp32 on CPU
        lm = load(cfg["gpt2"], "gpt2", device, dtype, length=max(1024, L + 1))
        lm.check_length(L, "length")
        ar = lm.model
        stats = measure(lambda: ar_sample(ar, B, L, top_k=0, seed=None), args.warmup, cfg["repeats"], B * L,
                        "GPT-2 KV cache")
        report(dict(model="gpt2", sampler="ancestral+kv", steps=None, **stats))
        gpt2_info = dict(model=str(cfg["gpt2"]), fingerprint=lm.fingerprint, parameters=sum(p.numel() for p in ar.parameters()),
                         dtype=str(next(ar.parameters()).dtype))
        for row in rows[:-1]:
            row["speedup_vs_gpt2"] = rows[-1]["mean_latency"] / row["mean_latency"]

    result = dict(
        benchmark="latency", setup=args.setup, device=device_name(device), torch=torch.__version__,
        batch_size=B, length=L, warmup=args.warmup, repeats=cfg["repeats"], seed=args.seed,
        sedd=sedd_info, gpt2=gpt2_info, sedd_precision="bf16 autocast" if device.type == "cuda" else "fp32",
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), results=rows,
    )
    info = {"sedd": sedd_info, "gpt2": gpt2_info}
    result["record"] = records.record("latency", [records.Latency(
        f"{r['model']} {r['sampler']}" + (f" T={r['steps']}" if r["steps"] else ""), r["model"], r["sampler"], r["steps"],
        records.Stat(r["mean_latency"], r["std_latency"]), records.Stat(r["mean_throughput"], r["std_throughput"]),
        L, B, info[r["model"]]["parameters"]) for r in rows])
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.table:
        atomic_write_text(args.table, markdown_table(result))
        print(f"wrote {args.table}")
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def markdown_table(result: dict) -> str:
    head = (f"Latency for B = {result['batch_size']} sequences of L = {result['length']} tokens on {result['device']} "
            f"({result['repeats']} timed runs after {result['warmup']} warm-ups; mean +- std).\n\n"
            "| model | sampler | steps | NFE | latency (s) | tokens/s | speed-up vs GPT-2 |\n|---|---|---|---|---|---|---|\n")
    lines = []
    for r in result["results"]:
        name = result["sedd"]["model"] if r["model"] == "sedd" else result["gpt2"]["model"]
        speed = f"{r['speedup_vs_gpt2']:.2f}x" if "speedup_vs_gpt2" in r else "-"
        lines.append(f"| {r['model']} ({name}) | {r['sampler']} | {r['steps'] or '-'} | {r['nfe']} | "
                     f"{r['mean_latency']:.4f} +- {r['std_latency']:.4f} | {r['mean_throughput']:.1f} | {speed} |")
    return head + "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in result["results"] if r["model"] == "sedd" and r["steps"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar([r["steps"] for r in steps], [r["mean_latency"] for r in steps], [r["std_latency"] for r in steps],
                marker="o", capsize=3, label=f"SEDD ({result['sedd']['model']})")
    for r in result["results"]:
        if r["sampler"] == "fhs":
            ax.axhline(r["mean_latency"], color="tab:green", ls=":", label=f"SEDD first-hitting ({r['nfe']} NFE)")
        if r["model"] == "gpt2":
            ax.axhline(r["mean_latency"], color="tab:red", ls="--", label=f"GPT-2 + KV cache ({result['gpt2']['model']})")
            ax.axhspan(r["mean_latency"] - r["std_latency"], r["mean_latency"] + r["std_latency"], color="tab:red", alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("SEDD sampling steps")
    ax.set_ylabel("latency (s)")
    ax.set_title(f"B={result['batch_size']}, L={result['length']}, {result['device']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
