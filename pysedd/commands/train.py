"""``pysedd train``: train SEDD or the GPT-2 baseline on a prepared dataset; resumes automatically."""
from __future__ import annotations

import argparse

from . import Renamed

EXAMPLES = """examples:
  pysedd prepare demo --out data/demo --length 128 --val-fraction 0.05
  pysedd train --preset cpu-tiny --kind sedd --data data/demo --out runs/sedd-tiny
  pysedd train --preset cpu-tiny --kind gpt2 --data data/demo --out runs/gpt2-tiny
  torchrun --nproc_per_node 8 -m pysedd train --preset paper-small --data data/owt --out runs/sedd-small

Re-running the same command resumes from the newest good checkpoint in --out/checkpoints, also with another
--steps (a larger one continues the run), cadence, device or number of processes. Other model, optimizer, data or
seed settings are refused (the run is left untouched) unless --supersede moves the old run into
--out/superseded-<UTC time>/.
exit codes: 0 done, 2 bad input, 3 NaN/inf loss (last good checkpoint kept),
            75 stopped by SIGTERM/SIGUSR1 (after writing a checkpoint, or during start-up): run again to resume
"""

# TrainConfig fields whose flag has another name (docs/cli.md): the first spelling, then deprecated aliases
RENAMED = {"model": ("--kind", "--model")}

# flags that map one-to-one onto TrainConfig fields: (field, type, help)
FIELDS = [
    ("model", str, "sedd or gpt2"),
    ("size", str, "tiny, small (768x12, paper) or medium (1024x24)"),
    ("graph", str, "SEDD graph: absorb or uniform"),
    ("noise", str, "SEDD noise: loglinear or geometric"),
    ("dropout", float, "override the preset's dropout"),
    ("hidden_size", int, "override the preset's width"),
    ("n_blocks", int, "override the preset's depth"),
    ("n_heads", int, "override the preset's attention heads"),
    ("init_from", str, "start from pretrained weights (directory or hub id, e.g. gpt2)"),
    ("data", str, "directory written by `pysedd prepare`"),
    ("out", str, "run directory (checkpoints, metrics.jsonl, export/)"),
    ("steps", int, "total optimizer steps"),
    ("batch_size", int, "global sequences per optimizer step"),
    ("micro_batch_size", int, "sequences per process per forward (the rest is gradient accumulation)"),
    ("lr", float, "peak learning rate"),
    ("warmup_steps", int, "linear warm-up steps"),
    ("grad_clip", float, "gradient-norm clip"),
    ("ema_decay", float, "EMA decay cap"),
    ("seed", int, "seed of the data order, initial weights and noise"),
    ("log_every", int, "steps between metrics lines"),
    ("eval_every", int, "steps between validation losses (0 = never)"),
    ("eval_batches", int, "validation micro-batches per evaluation"),
    ("ckpt_every", int, "steps between checkpoints"),
    ("keep_last", int, "checkpoints to keep"),
    ("device", str, "auto, cpu, cuda or cuda:N"),
    ("precision", str, "auto (bf16 on GPU), bf16 or fp32"),
    ("verify_data", str, "auto (sha256 of data files up to 1 GiB, sampled pages of larger ones), full or size"),
]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train SEDD or GPT-2 (resumable, DDP via torchrun)",
        description="Train SEDD (score entropy) or a GPT-2 baseline with the paper's recipe: AdamW 3e-4, linear "
        "warm-up, EMA 0.9999, grad clip 1.0, bf16 autocast on GPU. Options come from --preset, then --config, "
        "then the flags below.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML or JSON file of training options")
    p.add_argument("--preset", help="paper-small, paper-medium or cpu-tiny")
    for name, kind, text in FIELDS:
        flags = RENAMED.get(name, ("--" + name.replace("_", "-"),))
        p.add_argument(*flags, dest=name, type=kind, help=text, action=Renamed, metavar=flags[0][2:].upper())
    p.add_argument("--plain-loss", dest="fused_loss", action="store_false", default=None,
                   help="SEDD: materialise the [B, L, V] scores instead of the fused absorb loss (same values)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.add_argument("--supersede", action="store_true", default=None,
                   help="if --out holds a run with other model/optimizer/data/seed settings, move it aside into "
                   "--out/superseded-<UTC time>/ and start afresh (default: refuse)")
    p.set_defaults(func=run)


def config_from_args(args):
    """Preset, then config file, then flags: later ones win."""
    from pysedd.train.config import TrainConfig, preset_options, read_options

    options = preset_options(args.preset) if args.preset else {}
    if args.config:
        options.update(read_options(args.config))
    options.update({name: getattr(args, name) for name, _, _ in FIELDS if getattr(args, name) is not None})
    for switch in ("progress", "fused_loss", "supersede"):
        if getattr(args, switch) is not None:
            options[switch] = getattr(args, switch)
    return TrainConfig.from_dict(options)


def run(args) -> int:
    from pysedd.train import train

    return train(config_from_args(args), args.stop_request)
