"""``pysedd prepare``: tokenise a corpus with GPT-2 BPE and pack it into memory-mapped blocks for training/evaluation."""
from __future__ import annotations

import argparse

from . import Renamed

EXAMPLES = """examples:
  pysedd prepare demo --out data/demo --length 256 --val-fraction 0.05     # no download: Python's own docs
  pysedd prepare openwebtext --out data/owt --val-fraction 0.0005           # the paper's training data (hub)
  pysedd prepare wikitext103 --hub-split validation --split-name validation --out data/wt103-val
  pysedd prepare wikitext2 --path ../shared/data/wikitext-2-raw/wiki.test.raw --split-name test --out data/wt2-test
  pysedd prepare --path notes.txt --text-mode document --out data/mine      # local .txt (or .jsonl with a text field)
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="tokenise and pack a corpus",
        description="Tokenise a corpus with GPT-2 BPE, append EOS to every row, concatenate, cut into --length blocks "
        "(remainder dropped, no BOS) and store them as <split>.bin + manifest.json in --out.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("corpus", nargs="?", help="demo, openwebtext, wikitext2, wikitext103, ptb, lambada, lm1b "
                   "(omit for plain local files given with --path)")
    p.add_argument("--path", nargs="+", default=[], help="local file(s) instead of the hub: with a corpus name they "
                   "are read in that corpus's format, otherwise as .txt/.jsonl")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--length", "--seq-len", action=Renamed, type=int, default=1024,
                   help="block length in tokens (default 1024, the paper's)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="put the last ceil(f * blocks) blocks in a 'validation' split (default 0: no split)")
    p.add_argument("--split-name", default="train", help="name of the main split (default train)")
    p.add_argument("--hub-split", default="train", help="split to load from the hub (default train)")
    p.add_argument("--text-mode", choices=["lines", "document", "wikitext", "stripped-lines", "jsonl"],
                   help="how local files become rows (default: the corpus's own format, else one row per line)")
    p.add_argument("--field", default="text", help="JSON field holding the text in .jsonl files (default text)")
    p.add_argument("--detokenizer", help="override the detokeniser: wikitext, ptb, lm1b, lambada or none")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2 (bundled files), a directory, or a hub id")
    p.add_argument("--batch-rows", type=int, default=1024, help="rows per parallel tokenisation batch")
    p.add_argument("--streaming", action="store_true", help="stream the hub dataset instead of downloading it")
    p.add_argument("--force", action="store_true", help="rebuild even if --out already holds this exact dataset")
    p.set_defaults(func=run)


def run(args) -> int:
    from pysedd.data import open_corpus, prepare_corpus
    from pysedd.tokenizer import get_tokenizer

    corpus = open_corpus(args.corpus, args.path, split=args.hub_split, line_format=args.text_mode, field=args.field,
                         detokenizer=args.detokenizer, streaming=args.streaming)
    manifest = prepare_corpus(corpus, args.out, get_tokenizer(args.tokenizer), seq_len=args.length,
                              val_fraction=args.val_fraction, split_name=args.split_name,
                              batch_rows=args.batch_rows, force=args.force)
    for split, info in manifest["splits"].items():
        print(f"{args.out}/{info['file']}: {split}, {info['blocks']} blocks x {manifest['seq_len']} tokens")
    print(f"{manifest['rows']} rows, {manifest['tokens_total']} tokens, {manifest['tokens_dropped']} dropped remainder")
    return 0
