"""Speed of pysedd's step sampler (float64 draws, masked rows only) against the official sampler's loop (every
position, full [B, L, V] weights, float32 Gumbel draws; pysedd's categorical="reference"), measured in the same run on
the same model.

    PYTHONPATH=. python bench/sampler_speed.py [--preset tiny --batch-size 4 --length 128 --steps 128 --repeats 3]
"""
import argparse
import statistics
import time

import torch

from pysedd.loader import load
from pysedd.sampling import pc_sample


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.fmean(times), statistics.stdev(times) if repeats > 1 else 0.0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lm = load(args.preset, "sedd", "cpu", length=args.length)
    model, graph, noise = lm.model, lm.graph, lm.noise
    B, L, T = args.batch_size, args.length, args.steps
    gen = torch.Generator().manual_seed(0)
    ref = timed(lambda: pc_sample(model, graph, noise, B, L, T, generator=gen, categorical="reference"), args.repeats)
    new = timed(lambda: pc_sample(model, graph, noise, B, L, T, generator=gen), args.repeats)
    print(f"{args.preset} SEDD, B={B}, L={L}, {T} analytic steps, CPU 1 thread, {args.repeats} runs")
    print(f"official loop (categorical=reference): {ref[0]:.3f} +- {ref[1]:.3f} s")
    print(f"pysedd pc_sample: {new[0]:.3f} +- {new[1]:.3f} s")
    print(f"speed-up: {ref[0] / new[0]:.2f}x")


if __name__ == "__main__":
    main()
