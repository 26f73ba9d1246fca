"""Text corpora as streams of rows: hub datasets by id, local .txt/.jsonl files, and an embedded demo corpus.

A row is what the original pipeline tokenises as one unit (followed by one EOS): a document for OpenWebText, a line for
WikiText/PTB/1BW, a passage for LAMBADA. Named corpora read from local copies produce exactly the rows the hub
dataset would (e.g. WikiText keeps each line's "\\n" and turns blank lines into ""), so packing and perplexity numbers
do not depend on where the text came from.

The **demo corpus** is the Python Language Reference that ships inside every CPython as ``pydoc_data.topics`` (what
``help('if')`` prints): 79 sections of edited English prose, about 465k characters (~110k GPT-2 tokens, ~100 blocks of
1024) on Python 3.11, loaded in milliseconds with no import side effects. The alternatives are worse: the stdlib's
module docstrings give only ~177k characters, must be parsed from ~650 files (~3 s), and are code-heavy; the bundled
LICENSE is 14k characters of legal text. It is real English for smoke training, not a benchmark: its size and content
depend on the Python version, which the manifest records through the sha256 of the rows.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from pysedd.data.detokenize import detokenizer_for
from pysedd.errors import UserError
from pysedd.io import require_file, sha256_file


@dataclass(frozen=True)
class HubCorpus:
    """Where a named corpus lives on the hub and how its rows look (docs/evaluation-protocol.md#datasets)."""

    hub_id: str
    config: str | None
    field: str
    line_format: str  # how a local copy maps to rows: 'wikitext' | 'stripped-lines' | 'jsonl' | 'lines'


CORPORA: dict[str, HubCorpus] = {
    "openwebtext": HubCorpus("Skylion007/openwebtext", "plain_text", "text", "lines"),
    "wikitext2": HubCorpus("Salesforce/wikitext", "wikitext-2-raw-v1", "text", "wikitext"),
    "wikitext103": HubCorpus("Salesforce/wikitext", "wikitext-103-raw-v1", "text", "wikitext"),
    "ptb": HubCorpus("ptb-text-only/ptb_text_only", "penn_treebank", "sentence", "stripped-lines"),
    "lambada": HubCorpus("EleutherAI/lambada_openai", "default", "text", "jsonl"),
    "lm1b": HubCorpus("billion-word-benchmark/lm1b", "plain_text", "text", "stripped-lines"),
}
ALIASES = {"owt": "openwebtext", "wikitext-2": "wikitext2", "wikitext-103": "wikitext103", "1bw": "lm1b",
           "lambada_openai": "lambada", "penn_treebank": "ptb"}
DEMO = "demo"


def canonical_name(name: str) -> str:
    name = ALIASES.get(name.lower(), name.lower())
    if name != DEMO and name not in CORPORA:
        raise UserError(f"unknown corpus {name!r}; known: {', '.join([DEMO, *CORPORA])}, or pass local files with --path")
    return name


def demo_rows() -> list[str]:
    """The embedded demo corpus: one row per Language Reference section, in a fixed (sorted) order."""
    from pydoc_data.topics import topics

    return [topics[key].strip() + "\n" for key in sorted(topics)]


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text: invalid byte 0x{data[exc.start]:02x} at offset {exc.start}") from None


def _jsonl_rows(path: Path, field: str) -> Iterator[str]:
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise UserError(f"{path}:{lineno}: expected an object with a string field {field!r}")
        yield record[field]


def file_rows(path: str | Path, line_format: str = "lines", field: str = "text") -> Iterator[str]:
    """Rows of one local file.

    line_format: 'lines' (one row per non-blank line, without its newline), 'document' (the whole file is one row),
    'wikitext' (lines keep their "\\n", whitespace-only lines become "" as in the hub dataset),
    'stripped-lines' (each line stripped, as the hub PTB/1BW builders did) or 'jsonl' (field ``field`` of each line).
    A .jsonl suffix always means 'jsonl'.
    """
    path = require_file(path, "corpus file")
    if path.suffix == ".jsonl" or line_format == "jsonl":
        yield from _jsonl_rows(path, field)
        return
    text = _read_text(path)
    if line_format == "document":
        yield text
    elif line_format == "wikitext":
        yield from (line if line.strip() else "" for line in text.splitlines(keepends=True))
    elif line_format == "stripped-lines":
        yield from (line.strip() for line in text.splitlines())
    elif line_format == "lines":  # blank lines carry no text: they do not become rows (nor lone EOS tokens)
        yield from (line for line in text.splitlines() if line.strip())
    else:
        raise UserError(f"unknown line format {line_format!r}; use lines, document, wikitext, stripped-lines or jsonl")


def hub_rows(name: str, split: str, streaming: bool = False) -> tuple[Iterable[str], int | None]:
    """Rows of a named corpus from the Hugging Face hub (``datasets.load_dataset``) and their count when known."""
    import datasets

    spec = CORPORA[name]
    try:
        ds = datasets.load_dataset(spec.hub_id, spec.config, split=split, streaming=streaming)
    except Exception as exc:
        raise UserError(
            f"cannot load {spec.hub_id} ({spec.config}) split {split!r} from the hub: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Offline, pass a local copy with --path"
        ) from None
    rows = (record[spec.field] for record in ds)
    return rows, (None if streaming else len(ds))


@dataclass
class Corpus:
    """A stream of detokenised rows plus what identifies its source (goes into the manifest)."""

    name: str
    rows: Iterable[str]
    total: int | None
    detokenize: Callable[[str], str] | None
    source: dict

    def texts(self) -> Iterator[str]:
        for row in self.rows:
            yield self.detokenize(row) if self.detokenize is not None else row


def open_corpus(
    name: str | None = None,
    paths: Iterable[str | Path] = (),
    split: str = "train",
    line_format: str | None = None,
    field: str = "text",
    detokenizer: str | None = None,
    streaming: bool = False,
) -> Corpus:
    """Opens a corpus.

    - ``name`` alone: the hub dataset (or the embedded demo for 'demo'), with its detokeniser.
    - ``name`` + ``paths``: local copies in that corpus's format (e.g. wikitext2 + wiki.test.raw).
    - ``paths`` alone: generic local .txt (``line_format`` 'lines' or 'document') / .jsonl files, no detokeniser
      unless ``detokenizer`` names one.
    """
    paths = [Path(p) for p in paths]
    if name is None and not paths:
        raise UserError("give a corpus name (e.g. demo, openwebtext, wikitext103) or local files")
    name = canonical_name(name) if name is not None else None
    detok_name = detokenizer if detokenizer is not None else name
    detokenize = detokenizer_for(detok_name)
    source: dict = {"name": name, "split": split, "detokenizer": detok_name if detokenize else None}
    if name == DEMO and not paths:
        rows = demo_rows()
        source.update(kind="demo", python=sys.version.split()[0])
        return Corpus(name, rows, len(rows), detokenize, source)
    if paths:
        spec = CORPORA.get(name) if name else None
        fmt = line_format or (spec.line_format if spec else "lines")
        for p in paths:
            require_file(p, "corpus file")
        source.update(kind="files", line_format=fmt, field=field,
                      files={str(p): sha256_file(p) for p in paths})
        rows = (row for p in paths for row in file_rows(p, fmt, field))
        return Corpus(name or paths[0].stem, rows, None, detokenize, source)
    spec = CORPORA[name]
    rows, total = hub_rows(name, split, streaming)
    source.update(kind="hub", hub_id=spec.hub_id, config=spec.config, field=spec.field)
    return Corpus(name, rows, total, detokenize, source)
