"""`pysedd bench frontier`: the quality-latency frontier. Every sampler of SEDD (analytic at each step count, the exact
first-hitting sampler, first-hitting with k tokens per call, each distilled student at its own step count) and GPT-2
(ancestral and top-p with its KV cache) draws the same number of samples of the same length on the same device;
each point is (latency per sample, generative perplexity under one judge), with the samples' unigram entropy beside
it. JSON, markdown, HTML and a PNG (judge perplexity against latency, log x). How to read it: docs/distillation.md."""
from __future__ import annotations

import argparse
import base64
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..defaults import CATEGORICAL
from ..errors import UserError
from ..io import atomic_write_text, require_output_files

GEN_PPL_MODE = "b"  # exp of the mean over samples of each sample's mean NLL of tokens 2..L (pysedd eval gen-ppl's default)


def add_parser(sub) -> None:
    q = sub.add_parser(
        "frontier",
        help="judge perplexity vs latency for every SEDD sampler, distilled students and GPT-2",
        description="Each configuration draws --num-samples samples of --length tokens in batches of --batch-size "
        "(timed after one warm-up batch, device-synchronised); latency per sample = total sampling time / samples. "
        "Generative perplexity: the judge's mean-then-exp over samples (tokens 2..L), unigram entropy beside it.")
    q.add_argument("--sedd", required=True, help="the teacher SEDD: checkpoint directory or hub id")
    q.add_argument("--students", nargs="*", default=[], metavar="DIR[:STEPS]",
                   help="distilled students (pysedd distill exports; STEPS defaults to the export's distill.json)")
    q.add_argument("--gpt2", default=None, help="GPT-2 baseline: directory or hub id ('none' or omitted: no baseline)")
    q.add_argument("--judge", required=True, help="the AR judge of generative perplexity: directory or hub id")
    q.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64], help="analytic step counts (default 16 32 64)")
    q.add_argument("--fhs-k", type=int, nargs="*", default=[1, 4], metavar="K",
                   help="first-hitting with K tokens per network call (1 = exact; default 1 4; none to skip)")
    q.add_argument("--top-p", type=float, nargs="*", default=[0.95], help="GPT-2 nucleus settings besides ancestral "
                   "(default 0.95)")
    q.add_argument("--num-samples", type=int, default=16, help="samples per configuration (default 16)")
    q.add_argument("--length", type=int, default=128, help="tokens per sample (default 128)")
    q.add_argument("--batch-size", type=int, default=8, help="samples per sampler call (default 8)")
    q.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 gives steadier CPU timings)")
    q.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    q.add_argument("--categorical", choices=CATEGORICAL, default=CATEGORICAL[0],
                   help="SEDD's categorical draw: float64 (default, the exact law) or reference (the official "
                   "sampler's float32 Gumbel-max)")
    q.add_argument("--out", required=True, help="result JSON")
    q.add_argument("--table", default=None, help="also write a markdown table (with the plot beside it when --plot)")
    q.add_argument("--html", default=None, help="also write a self-contained HTML page (table + plot)")
    q.add_argument("--plot", default=None, help="also write a PNG plot")
    q.set_defaults(func=run_frontier)


def check(args) -> None:
    require_output_files(args, "out", "table", "html", "plot")
    for name in ("num_samples", "length", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if any(s < 1 for s in args.steps) or any(k < 1 for k in args.fhs_k):
        raise UserError("--steps and --fhs-k must all be >= 1")
    if any(not 0.0 < p <= 1.0 for p in args.top_p):
        raise UserError(f"--top-p values must lie in (0, 1], got {args.top_p}")


def student_spec(spec: str) -> tuple[str, int]:
    """'DIR:STEPS' or 'DIR' (steps from DIR/distill.json)."""
    from ..train.distill import read_student_steps

    path, _, steps = spec.rpartition(":") if ":" in spec and spec.rpartition(":")[2].isdigit() else (spec, "", "")
    if steps:
        return path, int(steps)
    found = read_student_steps(path)
    if found is None:
        raise UserError(f"--students {spec}: no distill.json in it; give the step count as {spec}:STEPS")
    return path, found


def timed_samples(draw, n: int, batch: int) -> tuple[torch.Tensor, float, int]:
    """(samples [n, L] on the CPU, total wall seconds, network calls) of `draw(b, seed)` over ceil(n / batch) calls,
    after one untimed warm-up call."""
    draw(min(batch, n), -1)
    rows, wall, nfe = [], 0.0, 0
    for i, start in enumerate(range(0, n, batch)):
        out = draw(min(batch, n - start), i)
        rows.append(out.samples.cpu())
        wall += out.wall_time
        nfe += out.nfe
    return torch.cat(rows), wall, nfe


def judge_scores(judge, samples: torch.Tensor, batch: int) -> dict:
    from ..eval.common import ar_token_nll
    from ..eval.diversity import unigram_entropy

    device = next(judge.parameters()).device
    nll = torch.cat([ar_token_nll(judge, samples[i:i + batch].to(device)) for i in range(0, len(samples), batch)])
    entropy = np.array([unigram_entropy(row) for row in samples.tolist()])
    return dict(gen_ppl=math.exp(float(nll.mean(1).mean())), entropy=float(entropy.mean()),
                entropy_std=float(entropy.std(ddof=1)) if len(entropy) > 1 else 0.0)


def run_frontier(args: argparse.Namespace) -> int:
    from ..ar import ar_sample
    from ..loader import load, pick_device
    from ..report import frontier_plot, frontier_table
    from ..results import record
    from ..sampling import fhs_sample, pc_sample
    from .sample import device_name

    def load_sedd(spec):
        lm = load(spec, "sedd", device, length=L)
        lm.check_length(L, "--length")
        return lm.model, lm.graph, lm.noise

    check(args)
    students = [student_spec(s) for s in args.students]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    n, L, B = args.num_samples, args.length, args.batch_size
    judge = load(args.judge, "gpt2", device).model
    rows = []

    def point(family, label, model_name, draw, **info):
        samples, wall, nfe = timed_samples(draw, n, B)
        row = dict(family=family, sampler=label, model=model_name, latency_per_sample=wall / n, total_seconds=wall,
                   nfe=nfe, **info, **judge_scores(judge, samples, B))
        rows.append(row)
        print(f"{family:>18} {label:>14}  {row['latency_per_sample'] * 1e3:9.2f} ms/sample  gen-PPL "
              f"{row['gen_ppl']:10.2f}  entropy {row['entropy']:.3f}", flush=True)

    def seeded(i):
        return torch.Generator(device).manual_seed(args.seed * 1_000_003 + i + 1)

    model, graph, noise = load_sedd(args.sedd)
    for steps in args.steps:
        point("SEDD analytic", f"T={steps}", args.sedd, lambda b, i, steps=steps, m=model: pc_sample(
            m, graph, noise, b, L, steps, "analytic", generator=seeded(i), categorical=args.categorical), steps=steps)
    for k in args.fhs_k:
        point("SEDD first-hitting", "exact" if k == 1 else f"k={k}", args.sedd, lambda b, i, k=k, m=model: fhs_sample(
            m, graph, noise, b, L, tokens_per_call=k, generator=seeded(i), categorical=args.categorical),
            tokens_per_call=k)
    del model
    for path, steps in students:
        student, sgraph, snoise = load_sedd(path)
        point("SEDD distilled", f"T={steps}", path, lambda b, i, m=student: pc_sample(
            m, sgraph, snoise, b, L, steps, "analytic", generator=seeded(i), categorical=args.categorical),
            steps=steps)
        del student
    gpt2 = None
    if args.gpt2 and args.gpt2.lower() != "none":
        dtype = torch.bfloat16 if device.type == "cuda" else None  # the latency protocol's bf16 on GPU
        lm = load(args.gpt2, "gpt2", device, dtype, length=max(1024, L + 1))
        lm.check_length(L, "--length")
        ar = lm.model
        for top_p in [None, *args.top_p]:
            point("GPT-2", "ancestral" if top_p is None else f"top-p {top_p}", args.gpt2,
                  lambda b, i, top_p=top_p: ar_sample(ar, b, L, top_k=0, top_p=top_p, seed=args.seed * 1_000_003 + i + 1),
                  top_p=top_p, kv_cache=True)
        gpt2 = dict(model=args.gpt2, dtype=str(next(ar.parameters()).dtype))
        fastest = min((r for r in rows if r["family"] == "GPT-2"), key=lambda r: r["latency_per_sample"])
        for r in rows:
            r["latency_vs_gpt2"] = r["latency_per_sample"] / fastest["latency_per_sample"]

    result = dict(benchmark="frontier", device=device_name(device), torch=torch.__version__, num_samples=n, length=L,
                  batch_size=B, seed=args.seed, judge=args.judge, sedd=args.sedd, gpt2=gpt2,
                  gen_ppl_mode=GEN_PPL_MODE, latency="device-synchronised sampling time / samples, after one "
                  "warm-up call; judge scoring not included",
                  sedd_precision="bf16 autocast" if device.type == "cuda" else "fp32", categorical=args.categorical,
                  created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), results=rows)
    points = points_of(result)
    result["record"] = record("frontier", points)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.plot:
        frontier_plot(points, args.plot)
        print(f"wrote {args.plot}")
    table = frontier_table(points)
    if args.table:
        image = f"\n![quality-latency frontier]({Path(args.plot).name})\n" if args.plot else ""
        atomic_write_text(args.table, table.markdown() + image)
        print(f"wrote {args.table}")
    if args.html:
        atomic_write_text(args.html, html_page(table, args.plot))
        print(f"wrote {args.html}")
    return 0


def points_of(result: dict) -> list:
    """The frontier's rows as checked record entries (results.FrontierPoint), what the tables and plots read."""
    from ..results import FrontierPoint, Stat

    return [FrontierPoint(name=r["sampler"], family=r["family"], model=r["model"], nfe=r["nfe"],
                          latency=r["latency_per_sample"], gen_ppl=r["gen_ppl"],
                          entropy=Stat(r["entropy"], r["entropy_std"]), num_samples=result["num_samples"],
                          length=result["length"], batch_size=result["batch_size"], device=result["device"],
                          judge=result["judge"]) for r in result["results"]]


def html_page(table, plot_path: str | None) -> str:
    """A self-contained page: the table and the plot embedded as a data URI."""
    image = ""
    if plot_path:
        data = base64.b64encode(Path(plot_path).read_bytes()).decode()
        image = f'<p><img alt="quality-latency frontier" src="data:image/png;base64,{data}"></p>\n'
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Quality-latency frontier</title>"
            "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>\n"
            f"{image}{table.html()}</body></html>\n")
