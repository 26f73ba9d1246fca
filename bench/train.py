"""Training throughput: a SEDD step vs a GPT-2 step of the same width/depth on the same packed data, plus GPT-2 BPE
tokenisation throughput on the embedded demo corpus.

SEDD runs twice, with the fused absorb loss (the trainer's default) and with the plain loss that materialises the
[B, L, V] scores. All go through the real trainer step (forward + loss + backward + clip + AdamW + EMA) with the same batch.
Steps alternate between the two models so that load from other processes affects both alike; the figure is the median.

    PYTHONPATH=. python bench/train.py                      # CPU, 1 thread, "mini" (256 x 4 blocks), L=256
    PYTHONPATH=. python bench/train.py --size small --seq-len 1024 --batch 8 --device cuda
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch


def tokenizer_throughput(repeats: int) -> dict:
    from pysedd.data import demo_rows
    from pysedd.tokenizer import get_tokenizer

    tok = get_tokenizer()
    rows = demo_rows()
    n_tokens = sum(len(ids) for ids in tok.encode_batch(rows))
    hf = tok.as_transformers_tokenizer()
    timings = {}
    for name, fn in [("batched (Rust threads)", lambda: tok.encode_batch(rows)),
                     ("one row at a time", lambda: [tok.encode(r) for r in rows]),
                     ("transformers GPT2TokenizerFast(batch)", lambda: hf(rows, verbose=False)["input_ids"])]:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        timings[name] = n_tokens / best
    return {"rows": len(rows), "chars": sum(map(len, rows)), "tokens": n_tokens, "tokens_per_s": timings}


def step_throughput(args) -> dict:
    from pysedd.data import open_corpus, prepare_corpus
    from pysedd.tokenizer import get_tokenizer
    from pysedd.train import TrainConfig, Trainer

    tmp = tempfile.mkdtemp(prefix="pysedd-bench-")
    prepare_corpus(open_corpus("demo"), tmp, get_tokenizer(), seq_len=args.seq_len, progress=False)
    trainers = {}
    for name, model, fused in (("sedd", "sedd", True), ("sedd-plain-loss", "sedd", False), ("gpt2", "gpt2", True)):
        cfg = TrainConfig(model=model, size=args.size, data=tmp, out=os.path.join(tmp, name), steps=10**9,
                          batch_size=args.batch, warmup_steps=0, device=args.device, progress=False, dropout=0.1,
                          fused_loss=fused)
        trainers[name] = Trainer(cfg)
    params = {m: sum(p.numel() for p in t.model.parameters()) for m, t in trainers.items()}
    times = {m: [] for m in trainers}
    for i in range(args.warmup + args.steps):
        for model, trainer in trainers.items():
            if trainer.dist.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            trainer.train_step(trainer.objective)
            if trainer.dist.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[model].append(time.perf_counter() - t0)
    tokens = args.batch * args.seq_len
    tok_s = {m: tokens / statistics.median(ts) for m, ts in times.items()}
    return {"params": params, "median_step_s": {m: statistics.median(ts) for m, ts in times.items()},
            "tokens_per_s": tok_s, "ratio_sedd_over_gpt2": tok_s["sedd"] / tok_s["gpt2"],
            "ratio_plain_over_gpt2": tok_s["sedd-plain-loss"] / tok_s["gpt2"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="mini", help="SEDDConfig preset; GPT-2 gets the same width/depth/heads")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=8, help="measured steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokenizer-repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t = tokenizer_throughput(args.tokenizer_repeats)
    print(f"tokenisation, demo corpus ({t['rows']} rows, {t['chars']:,} chars, {t['tokens']:,} tokens):")
    for name, rate in t["tokens_per_s"].items():
        print(f"  {name:40s} {rate:12,.0f} tokens/s")

    s = step_throughput(args)
    print(f"\ntraining step, size={args.size} seq_len={args.seq_len} batch={args.batch} device={args.device} "
          f"threads={args.threads} ({args.steps} measured steps each, median):")
    for m in s["params"]:
        print(f"  {m:16s} {s['params'][m]:>12,} params  {s['median_step_s'][m]:8.3f} s/step  "
              f"{s['tokens_per_s'][m]:10,.0f} tokens/s")
    print(f"  ratio SEDD (fused loss) / GPT-2 tokens/s: {s['ratio_sedd_over_gpt2']:.3f} (target >= 0.9)")
    print(f"  ratio SEDD (plain loss) / GPT-2 tokens/s: {s['ratio_plain_over_gpt2']:.3f}")
    print(f"\npython {sys.version.split()[0]}, torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
