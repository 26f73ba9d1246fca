"""``pysedd distill``: few-step SEDD by self-distillation through time (docs/distillation.md)."""
from __future__ import annotations

import argparse

EXAMPLES = """examples:
  pysedd distill --teacher runs/sedd-tiny/export --data data/demo --out runs/distill-tiny --rounds 2 --steps 32 \\
      --train-steps 100 --batch-size 8 --lr 1e-4
  torchrun --nproc_per_node 8 -m pysedd distill --teacher louaaron/sedd-small --data data/owt --out runs/sdtt-small \\
      --rounds 6 --steps 1024 --train-steps 10000 --batch-size 128
  pysedd distill --teacher runs/sedd-tiny/export --data data/demo --out runs/distill-kl --rounds 1 --steps 32 \\
      --precompute-targets 512 --targets runs/targets --divergence kl     # targets computed once, shared by runs

Round r writes OUT/round-r/ (checkpoints, metrics.jsonl, export/); export/ is the student, a SEDD that loads with
from_pretrained and samples with steps / 2^(r+1) steps. Re-running the same command resumes: finished rounds are
skipped, an interrupted round resumes from its newest checkpoint, an interrupted target store from its last shard.
exit codes: 0 done, 2 bad input, 3 NaN/inf loss, 75 stopped by SIGTERM/SIGUSR1 after a checkpoint (run again)
"""

# trainer flags shared with `pysedd train` (the optimizer's step count is --train-steps here: --steps is sampling steps)
TRAIN_FIELDS = ("data", "out", "batch_size", "micro_batch_size", "lr", "warmup_steps", "grad_clip", "ema_decay", "seed",
                "log_every", "eval_every", "eval_batches", "ckpt_every", "keep_last", "device", "precision")
DISTILL_FIELDS = ("teacher", "rounds", "steps", "divergence", "eps", "precompute_targets", "targets", "target_top_k")
# distillation defaults that differ from training from scratch: a short warm-up, a fast EMA, a small lr
DEFAULTS = dict(train_steps=1000, batch_size=32, lr=1e-4, warmup_steps=50, ema_decay=0.999, log_every=10, eval_every=0,
                ckpt_every=500)


def add_parser(subparsers) -> None:
    from ..train.distill import DIVERGENCES
    from .train import FIELDS

    p = subparsers.add_parser(
        "distill", help="distil SEDD into a few-step student (self-distillation through time)",
        description="Each round trains a student, initialised from the teacher, so that one analytic student step "
        "of 2Δ matches two teacher steps of Δ on the masked positions (reverse KL by default); the step count "
        "halves each round. Runs on the training loop of `pysedd train` (EMA, checkpoints, resume, DDP).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML or JSON file of options (trainer fields plus teacher/rounds/steps/...)")
    p.add_argument("--teacher", help="round-0 teacher: directory or hub id of an absorbing-graph SEDD")
    p.add_argument("--rounds", type=int, help="distillation rounds (default 1)")
    p.add_argument("--steps", type=int, help="the teacher's sampling steps in round 0 (default 1024)")
    p.add_argument("--divergence", choices=DIVERGENCES, help="reverse_kl (default), kl or tv")
    p.add_argument("--eps", type=float, help="end of the sampling time grid (default 1e-5, as pysedd sample)")
    p.add_argument("--train-steps", dest="train_steps", type=int, help="optimizer steps per round (default 1000)")
    p.add_argument("--precompute-targets", dest="precompute_targets", type=int, metavar="N",
                   help="store the teacher targets of N training sequences first, then train the student on them "
                   "without the teacher (default 0: targets drawn on the fly)")
    p.add_argument("--targets", metavar="DIR", help="where target stores live (default OUT/targets); point several "
                   "runs (e.g. a sweep over --lr or --divergence) at one DIR to compute the targets once")
    p.add_argument("--target-top-k", dest="target_top_k", type=int, metavar="K",
                   help="store each target's K most likely tokens exactly and spread the rest evenly (default 0: "
                   "whole rows, 4 bytes x vocabulary per masked position)")
    helps = {name: text for name, _, text in FIELDS}
    kinds = {name: kind for name, kind, _ in FIELDS}
    for name in TRAIN_FIELDS:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kinds[name], help=helps[name])
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.set_defaults(func=run)


def configs_from_args(args):
    """(DistillConfig, TrainConfig): defaults, then the config file, then the flags."""
    from ..config import dataclass_from_dict
    from ..train.config import TrainConfig, read_options
    from ..train.distill import DistillConfig

    options = dict(DEFAULTS)
    if args.config:
        options.update(read_options(args.config))
    options.update({name: getattr(args, name) for name in TRAIN_FIELDS + DISTILL_FIELDS + ("train_steps", "progress")
                    if getattr(args, name) is not None})
    distill_options = {name: options.pop(name) for name in DISTILL_FIELDS if name in options}
    options["steps"] = options.pop("train_steps")
    cfg = dataclass_from_dict(DistillConfig, distill_options, "distillation options")
    cfg.validate()
    return cfg, TrainConfig.from_dict({**options, "model": "sedd"})


def run(args) -> int:
    from ..train.distill import distill

    return distill(*configs_from_args(args), stop=args.stop_request)
