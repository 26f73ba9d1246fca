"""`pysedd report`: the paper's tables (1-6) and the latency figure from a directory of evaluation results."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="build the paper's tables from evaluation results (markdown + TSV)",
        description="Read the JSON results the workflow writes under --results (eval/<evaluation>/<model>/...json, "
        "bench/latency.json) and write one markdown report with Tables 1-6 shaped like the paper's (models as rows, "
        "datasets or tasks as columns, ≤ for SEDD's likelihood bounds) and the latency figure.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--results", required=True, help="results directory of the workflow")
    p.add_argument("--out", required=True, help="markdown report to write")
    p.add_argument("--tables-dir", default=None, help="also write one TSV per table here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    tables = write_report(args.results, args.out, args.tables_dir)
    filled = sum(1 for t in tables if t.rows)
    print(f"{args.out}: {len(tables)} tables ({filled} with results)")
    return 0
