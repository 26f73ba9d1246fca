"""`pysedd demo`: build a tiny SEDD on the CPU, sample from it, and show what a step costs."""
from __future__ import annotations

import argparse
import time

import torch


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="build a tiny SEDD model and sample from it (runs in seconds on a laptop)",
        description="Build a randomly initialised tiny SEDD (absorbing graph, GPT-2 vocabulary), save and reload it, "
        "and draw samples with the analytic sampler. Untrained weights give random tokens: this checks the install.",
    )
    p.add_argument("--preset", default="tiny", help="model size preset (tiny, mini, small, medium)")
    p.add_argument("--steps", type=int, default=32, help="reverse-diffusion steps")
    p.add_argument("--length", type=int, default=64, help="tokens per sample")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, metavar="DIR", help="also save the model there (config.json + model.safetensors)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import SEDDConfig
    from ..graph import get_graph
    from ..model import SEDD
    from ..noise import get_noise
    from ..sampling.pc import pc_sample

    torch.manual_seed(args.seed)
    config = SEDDConfig.preset(args.preset)
    model = SEDD(config).eval()
    graph, noise = get_graph(config.graph.type, config.tokens), get_noise(config.noise)
    print(f"model: {args.preset}, {model.num_parameters():,} parameters ({model.num_parameters(non_embedding=True):,} non-embedding)")
    if args.save:
        model.save_pretrained(args.save)
        model = SEDD.from_pretrained(args.save)
        print(f"saved and reloaded from {args.save}")
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    x = pc_sample(model, graph, noise, args.batch_size, args.length, args.steps, generator=generator).samples
    elapsed = time.perf_counter() - start
    print(f"sampled {args.batch_size}x{args.length} tokens in {args.steps} steps: {elapsed:.2f} s "
          f"({args.batch_size * args.length / elapsed:.0f} tokens/s)")
    for row in x.tolist():
        print(row[:24], "..." if len(row) > 24 else "")
    return 0
