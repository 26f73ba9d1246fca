"""The error of `cache="approximate"`: how much a sigma-conditioned SEDD's prediction moves between the step where it
was computed and the later steps that reuse it.

The sampler is run with the cache on; every network call is recorded. For each reused step j (served from the call
made at step i with input x_i), the script evaluates the network afresh on x_i at sigma_j and compares, over the masked
positions, (a) the token law p(. | unmask) = softmax of the real-token log-scores (KL(fresh || reused), nats) and
(b) the total unmasking rate sum_j s_j (|log ratio|; the reuse rescales it exactly by (e^sigma_i - 1)/(e^sigma_j - 1),
so this is the network's own sigma dependence). A time-independent network gives 0 for both.

    PYTHONPATH=. python bench/cache_error.py [--model DIR_OR_PRESET] [--steps 1024 --length 64 --batch-size 1]
Random-init presets have zero-init adaLN and output maps (sigma-blind, constant); --perturb randomises them.
"""
import argparse
import math
import statistics

import torch

from pysedd.loader import load
from pysedd.config import PRESETS
from pysedd.graph import esigm1
from pysedd.sampling import pc_sample


class Recorder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []
        self.scale_by_sigma = model.scale_by_sigma

    def forward(self, x, sigma):
        self.calls.append((x.clone(), sigma.clone()))
        return self.model(x, sigma)


@torch.no_grad()
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--perturb", type=float, default=0.2, help="std of random adaLN weights for a preset (0: leave)")
    p.add_argument("--steps", type=int, default=1024)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    lm = load(args.model, "sedd", "cpu", length=args.length)
    model, graph, noise = lm.model, lm.graph, lm.noise
    if args.perturb and args.model in PRESETS:  # random weights: make the network depend on sigma at all
        for name, param in model.named_parameters():
            if "adaLN" in name or "output_layer.linear" in name:
                torch.nn.init.normal_(param, std=args.perturb)
    rec = Recorder(model)
    out = pc_sample(rec, graph, noise, args.batch_size, args.length, args.steps, cache="approximate", seed=args.seed)
    grid = torch.linspace(1.0, 1e-5, args.steps + 1, dtype=torch.float64)
    sig_grid = noise.total_noise(grid)
    call_steps = [int((sig_grid - s[0].double()).abs().argmin()) for _, s in rec.calls]
    kls, rate_errs = [], []
    N, M = graph.n_tokens, graph.mask_index
    for k, ((x, s_i), i) in enumerate(zip(rec.calls, call_steps)):
        end = call_steps[k + 1] if k + 1 < len(call_steps) else args.steps
        masked = x == M
        if not masked.any() or end <= i + 1:
            continue
        reused = model(x, s_i)[masked][:, :N].double()
        for j in range(i + 1, end, max(1, (end - i - 1) // 8)):  # up to ~8 reused steps per call
            s_j = sig_grid[j].expand(x.shape[0])
            fresh = model(x, s_j.float())[masked][:, :N].double()
            lp_f, lp_r = fresh.log_softmax(-1), reused.log_softmax(-1)
            kls.append(float((lp_f.exp() * (lp_f - lp_r)).sum(-1).mean()))
            shift = math.log(float(esigm1(s_i[0].double()) / esigm1(s_j[0])))
            rate_errs.append(float((fresh.logsumexp(-1) - reused.logsumexp(-1) - shift).abs().mean()))
    print(f"model {args.model} (perturb {args.perturb}), B={args.batch_size}, L={args.length}, {args.steps} analytic steps")
    print(f"network calls {out.nfe}, cache hits {out.cache_hits} (steps stop once nothing is masked)")
    if kls:
        print(f"token-law KL(fresh || reused) over masked positions: mean {statistics.fmean(kls):.3e}, max {max(kls):.3e} nats")
        print(f"|log total-rate ratio|: mean {statistics.fmean(rate_errs):.3e}, max {max(rate_errs):.3e}")
    else:
        print("no reused step had masked positions")


if __name__ == "__main__":
    main()
