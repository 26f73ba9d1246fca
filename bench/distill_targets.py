"""Stored teacher targets (`pysedd distill --precompute-targets`) against targets drawn on the fly, in one run.

For one teacher and one batch shape it measures:
  - the time of a student training step (forward + backward of the distillation loss) with the teacher's targets
    drawn on the fly, and read back from a store of whole rows and of top-k rows (ratios against on the fly);
  - the store's size on disk against the estimate `pysedd distill` checks free space with;
  - what top-k truncation does to the loss: the relative difference from whole rows on the same examples.

    PYTHONPATH=. python bench/distill_targets.py --model DIR --data DIR [--steps 32 --batch-size 8 --top-k 64]
Without --model a random tiny preset (perturbed, so that its targets are not uniform) is used; without --data the
demo corpus is tokenised into --length-token blocks in a temporary directory.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pysedd.train.distill import (EXAMPLES_PER_SHARD, DistillObjective, StoredTargetObjective, TargetStore,
                                  distill_loss, expected_store_bytes, precompute_targets)


def step_time(objective, x0, repeats: int) -> float:
    """Median seconds of forward + backward over `repeats` steps (after one warm-up), each with its own seed."""
    times = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        loss = objective(x0, generator=torch.Generator().manual_seed(r)).mean()
        loss.backward()
        times.append(time.perf_counter() - start)
        objective.model.zero_grad(set_to_none=True)
    return statistics.median(times[1:])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a SEDD directory (absorbing graph); default: random tiny preset")
    p.add_argument("--data", help="a `pysedd prepare` directory; default: the demo corpus")
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=32, help="teacher sampling steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--examples", type=int, default=2 * EXAMPLES_PER_SHARD)
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    from pysedd.data import PackedDataset, open_corpus, prepare_corpus
    from pysedd.graph import get_graph
    from pysedd.loader import load
    from pysedd.model import SEDD
    from pysedd.noise import get_noise
    from pysedd.tokenizer import get_tokenizer

    work = Path(tempfile.mkdtemp(prefix="distill-targets-"))
    if args.model:
        teacher_dir = Path(args.model)
    else:
        lm = load("tiny", "sedd", "cpu", length=args.length)
        with torch.no_grad():
            for name, param in lm.model.named_parameters():
                if "adaLN" in name or "output" in name:  # zero-initialised: randomise so the targets vary
                    param.normal_(0, 0.2)
        teacher_dir = work / "teacher"
        lm.model.save_pretrained(teacher_dir)
    data_dir = Path(args.data) if args.data else work / "data"
    if not args.data:
        prepare_corpus(open_corpus("demo"), data_dir, get_tokenizer(), seq_len=args.length, val_fraction=0.01,
                       progress=False)
    data = PackedDataset(data_dir, "train")
    teacher = SEDD.from_pretrained(teacher_dir).eval()
    graph, noise = get_graph(teacher.config.graph.type, teacher.config.tokens), get_noise(teacher.config.noise)
    n_tokens, seq_len = graph.n_tokens, data.seq_len
    order = list(range(args.examples))
    x0 = data.batch(order[:args.batch_size])

    stores = {}
    for top_k in (0, args.top_k):
        store = TargetStore(work / "targets", dict(teacher=str(teacher_dir), teacher_steps=args.steps, eps=1e-5,
                                                   data_sha256="bench", seq_len=seq_len, n_examples=args.examples,
                                                   n_tokens=n_tokens, top_k=top_k, seed=0))
        start = time.perf_counter()
        precompute_targets(store, teacher_dir, data, order, args.steps, 1e-5, 0, torch.device("cpu"), progress=False)
        store.finish()
        stores[top_k] = (store.open(), time.perf_counter() - start)

    student = SEDD.from_pretrained(teacher_dir).train()
    on_the_fly = step_time(DistillObjective(student, teacher, graph, noise, args.steps), x0, args.repeats)
    print(f"teacher {teacher_dir} ({sum(p.numel() for p in teacher.parameters()) / 1e6:.1f}M parameters), "
          f"{args.steps} teacher steps, batch {args.batch_size} x {seq_len} tokens, vocabulary {n_tokens}, 1 thread")
    print(f"{'targets':<22}{'step (s)':>10}{'x on the fly':>14}{'store (MB)':>12}{'estimate (MB)':>15}"
          f"{'precompute (s)':>16}")
    print(f"{'on the fly':<22}{on_the_fly:>10.3f}{1.0:>14.2f}{'-':>12}{'-':>15}{'-':>16}")
    for top_k, (store, seconds) in stores.items():
        objective = StoredTargetObjective(student, store, graph, noise, args.steps)
        t = step_time(objective, x0, args.repeats)
        size = sum(f.stat().st_size for f in store.dir.glob("shard-*.safetensors"))
        estimate = expected_store_bytes(noise, args.examples, seq_len, n_tokens, args.steps, top_k)
        name = "stored, whole rows" if top_k == 0 else f"stored, top-{top_k}"
        print(f"{name:<22}{t:>10.3f}{t / on_the_fly:>14.2f}{size / 1e6:>12.2f}{estimate / 1e6:>15.2f}{seconds:>16.2f}")

    with torch.no_grad():
        student.eval()
        delta = (1 - 1e-5) / args.steps
        dense = distill_loss(student, noise, stores[0][0].examples(order), delta, "reverse_kl", n_tokens)
        trunc = distill_loss(student, noise, stores[args.top_k][0].examples(order), delta, "reverse_kl", n_tokens)
        kept = stores[0][0].examples(order).log_target.topk(args.top_k, -1).values.double().exp().sum(-1)
    rel = float((trunc.sum() - dense.sum()).abs() / dense.sum())
    print(f"reverse-KL loss over {args.examples} stored examples: whole rows {float(dense.sum()):.4g}, "
          f"top-{args.top_k} {float(trunc.sum()):.4g} (relative difference {rel:.2%}); the top {args.top_k} tokens "
          f"hold {float(kept.mean()):.1%} of a target row's mass on average (min {float(kept.min()):.1%})")


if __name__ == "__main__":
    main()
