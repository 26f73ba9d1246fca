"""`pysedd report`: the paper's tables (1-7) and Figure 1 from a directory of result records, each number beside
the published one, and optionally the quality-latency frontier; `--plan` lists which paper cells a workflow config
fills."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="build the paper's tables from evaluation results, or print the plan of a config against the paper",
        description="Lay out the result records the workflow writes under --results (eval/<evaluation>/<model>/..., "
        "bench/latency.json) as the paper's Tables 1-7 and Figure 1, with the published value and the difference "
        "beside each reproduced cell when the config runs the paper's models. --plan prints, per table, the paper "
        "cells the config fills and those it cannot, ending with 'paper cells planned: N/M'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--configfile", nargs="+", action="extend", required=True, metavar="YAML",
                   help="the workflow config(s); later files override earlier ones key by key, as in snakemake")
    p.add_argument("--plan", action="store_true", help="print the plan against the paper and exit")
    p.add_argument("--results", default=None, help="results directory (default: the config's results_dir)")
    p.add_argument("--out", default=None, help="markdown report to write (default: <results>/report.md)")
    p.add_argument("--tables-dir", default=None, help="also write one HTML and one TSV file per table and Figure 1 here")
    p.add_argument("--frontier", default=None, metavar="JSON",
                   help="a `pysedd bench frontier` result: add the quality-latency frontier (table and plot) as the "
                   "report's last section")
    p.set_defaults(func=run)


def merge(base: dict, override: dict) -> dict:
    """`override` merged into `base` key by key at every level (snakemake's rule for several --configfile)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(paths: list[str]) -> dict:
    import json

    import yaml

    config: dict = {}
    for path in paths:
        try:
            text = Path(path).read_text()
            data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        except OSError as exc:
            raise UserError(f"cannot read config {path}: {exc.strerror}") from None
        except (yaml.YAMLError, ValueError) as exc:
            raise UserError(f"config {path} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise UserError(f"config {path} is not a mapping of keys")
        config = merge(config, data)
    models = config.get("models")
    if not isinstance(models, dict) or not models or not all(isinstance(m, dict) and "kind" in m for m in models.values()):
        raise UserError("the config has no 'models' mapping of {name: {kind: ...}}")
    return config


def run(args: argparse.Namespace) -> int:
    from ..report import plan, plan_text, write_report

    config = load_config(args.configfile)
    if args.plan:
        print(plan_text(plan(config)))
        return 0
    results = Path(args.results or config.get("results_dir", "results"))
    out = args.out or str(results / "report.md")
    tables = write_report(results, config, out, args.tables_dir, args.frontier)
    print(f"{out}: {len(tables)} tables")
    return 0
