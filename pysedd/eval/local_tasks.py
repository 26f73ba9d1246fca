"""The paper's lm-eval tasks over local data files, so the suite runs without the hub.

Each local task is a YAML that `include`s lm-eval's own built-in task by absolute path and swaps only the data source
(docs/evaluation-protocol.md#offline-tasks): prompts, choices, metrics and preprocessing stay lm-eval's. Offline
copies that come in another format (HellaSwag as .txt.bz2, ARC and WinoGrande in MosaicML's format, PIQA as jsonl +
a labels file) are converted at run time into the fields each built-in reads, in a cache directory (never in the
repository).
"""
from __future__ import annotations

import bz2
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..io import atomic_write_text

TASKS = ("lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge", "winogrande")
BUILTIN_YAML = {
    "lambada_openai": "lambada/lambada_openai.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "piqa": "piqa/piqa.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "winogrande": "winogrande/default.yaml",
}
EVAL_SPLIT = {"lambada_openai": "test", "hellaswag": "validation", "piqa": "validation", "arc_easy": "test",
              "arc_challenge": "test", "winogrande": "validation"}
# where each task's offline copy lives under ../shared/data
DEFAULT_FILES = {
    "lambada_openai": "lambada/lambada_test.jsonl",
    "hellaswag": "hellaswag/hellaswag_val_full.txt.bz2",
    "piqa": "piqa/valid.jsonl",
    "arc_easy": "arc/arc_easy.jsonl",
    "arc_challenge": "arc/arc_challenge.jsonl",
    "winogrande": "winogrande/winogrande.jsonl",
}
LOCAL_SUFFIX = "_local"


def _read_lines(path: Path) -> list[str]:
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def _read_jsonl(path: Path) -> list[dict]:
    docs = []
    for lineno, line in enumerate(_read_lines(path), 1):
        if line.strip():
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return docs


def _require(docs: list[dict], fields: tuple[str, ...], path: Path) -> None:
    for i, doc in enumerate(docs):
        missing = [f for f in fields if f not in doc]
        if missing:
            raise UserError(f"{path}: document {i} lacks field(s) {', '.join(missing)}")


# -- converters: local file -> documents with the fields the built-in task reads -------------------------------------

def convert_lambada(path: Path) -> list[dict]:
    docs = _read_jsonl(path)
    _require(docs, ("text",), path)
    return [{"text": d["text"]} for d in docs]


def convert_hellaswag(path: Path) -> list[dict]:
    """Canonical jsonl passes through. The .txt(.bz2) form has 6 lines per item ("label: context", gold index, 4
    endings); its context is already cleaned but not re-cased, so the trailing lowercase sentence start (the original
    ctx_b) is split off again for lm-eval's `ctx_b.capitalize()`."""
    if ".jsonl" in path.suffixes:
        docs = _read_jsonl(path)
        _require(docs, ("activity_label", "ctx_a", "ctx_b", "endings", "label"), path)
        return docs
    lines = _read_lines(path)
    if len(lines) % 6:
        raise UserError(f"{path}: expected 6 lines per HellaSwag item, got {len(lines)} lines")
    docs = []
    for i in range(0, len(lines), 6):
        head, label, endings = lines[i], lines[i + 1].strip(), lines[i + 2:i + 6]
        activity, sep, ctx = head.partition(": ")
        if not sep or label not in ("0", "1", "2", "3"):
            raise UserError(f"{path}:{i + 1}: not a HellaSwag item (\"label: context\", then a gold index 0-3)")
        cut = ctx.rfind(". ")
        if cut >= 0 and ctx[cut + 2:cut + 3].islower():
            ctx_a, ctx_b = ctx[:cut + 1], ctx[cut + 2:]
        else:
            ctx_a, ctx_b = ctx, ""
        docs.append({"activity_label": activity, "ctx_a": ctx_a, "ctx_b": ctx_b, "endings": endings, "label": label})
    return docs


def convert_piqa(path: Path) -> list[dict]:
    """goal/sol1/sol2 jsonl; the labels come from the file itself or from `<stem>-labels.lst` beside it."""
    docs = _read_jsonl(path)
    _require(docs, ("goal", "sol1", "sol2"), path)
    if all("label" in d for d in docs):
        return docs
    labels_path = path.with_name(path.name.split(".")[0] + "-labels.lst")
    if not labels_path.is_file():
        raise UserError(f"{path} has no 'label' field and there is no {labels_path.name} beside it")
    labels = [line.strip() for line in _read_lines(labels_path) if line.strip()]
    if len(labels) != len(docs):
        raise UserError(f"{labels_path} has {len(labels)} labels for {len(docs)} PIQA documents")
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(lab)} for d, lab in zip(docs, labels)]


def convert_arc(path: Path) -> list[dict]:
    """Canonical ARC passes through; MosaicML's {query: "Question: ...", choices, gold} gets labels A, B, C, ..."""
    docs = _read_jsonl(path)
    if all({"question", "choices", "answerKey"} <= set(d) for d in docs):
        return docs
    _require(docs, ("query", "choices", "gold"), path)
    out = []
    for d in docs:
        question = d["query"].strip()
        question = question.removeprefix("Question:").strip()
        question = question.removesuffix("Answer:").strip()
        labels = [chr(ord("A") + k) for k in range(len(d["choices"]))]
        out.append({"question": question, "choices": {"text": list(d["choices"]), "label": labels},
                    "answerKey": labels[int(d["gold"])]})
    return out


def convert_winogrande(path: Path) -> list[dict]:
    """Canonical WinoGrande passes through. MosaicML's form has the two contexts (sentence up to "_" with each option
    filled in) and the continuation: the shared prefix, cut back to a word boundary, is the sentence start; the rest of
    each context is its option. lm-eval rebuilds exactly the same two contexts and target from that."""
    docs = _read_jsonl(path)
    if all({"sentence", "option1", "option2", "answer"} <= set(d) for d in docs):
        return docs
    _require(docs, ("context_options", "continuation", "gold"), path)
    out = []
    for d in docs:
        a, b = d["context_options"]
        common = os.path.commonprefix([a, b])
        prefix = common[: common.rfind(" ") + 1]
        out.append({"sentence": prefix + "_ " + d["continuation"].strip(), "option1": a[len(prefix):],
                    "option2": b[len(prefix):], "answer": str(int(d["gold"]) + 1)})
    return out


CONVERTERS: dict[str, Callable[[Path], list[dict]]] = {
    "lambada_openai": convert_lambada,
    "hellaswag": convert_hellaswag,
    "piqa": convert_piqa,
    "arc_easy": convert_arc,
    "arc_challenge": convert_arc,
    "winogrande": convert_winogrande,
}


def builtin_yaml(task: str) -> Path:
    import lm_eval.tasks

    return Path(os.path.dirname(lm_eval.tasks.__file__)) / BUILTIN_YAML[task]


def check_task(task: str) -> str:
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; the paper's tasks are {', '.join(TASKS)}")
    return task


def local_task_yaml(task: str, data_file: str | os.PathLike, cache_dir: str | os.PathLike) -> tuple[Path, dict]:
    """Convert `data_file` for `task` into `cache_dir` and write a task YAML over it; returns (yaml path, provenance).

    The local task is named `<task>_local`."""
    check_task(task)
    src = Path(data_file)
    if not src.is_file():
        raise UserError(f"data file for {task} not found: {src}")
    if src.stat().st_size == 0:
        raise UserError(f"data file for {task} is empty: {src}")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    docs = CONVERTERS[task](src)
    if not docs:
        raise UserError(f"task {task}: {src} holds no documents")
    target = Path(cache_dir) / f"{task}-{digest[:16]}"
    data_path = (target / "data.jsonl").resolve()
    atomic_write_text(data_path, "".join(json.dumps(d) + "\n" for d in docs))
    split = EVAL_SPLIT[task]
    config = {
        "include": str(builtin_yaml(task)),
        "task": task + LOCAL_SUFFIX,
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(data_path)}},
        "training_split": None,
        "validation_split": split if split == "validation" else None,
        "test_split": split if split == "test" else None,
        "fewshot_split": None,
    }
    yaml_path = target / f"{task}{LOCAL_SUFFIX}.yaml"
    atomic_write_text(yaml_path, json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
    return yaml_path, {"task": task, "file": str(src.resolve()), "sha256": digest, "n_docs": len(docs), "split": split}
