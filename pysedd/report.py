"""The paper's tables from the evaluation results: zero-shot perplexity (Table 1), downstream tasks (2), generative
perplexity (3), diversity (4), MAUVE (5), continuation perplexity (6) and latency (Figure 1 + table).

The results directory has the layout the workflow writes (one JSON per evaluation, named by model and setting):

    eval/zero-shot/<model>/<dataset>.json     eval/lm-eval/<model>.json
    eval/gen-ppl/<model>/<setting>.json       eval/diversity/<model>/<setting>.json, eval/diversity/data/<name>.json
    eval/mauve/<model>/<setting>.json         bench/latency.json (+ latency.png)

Model and setting names come from the paths; the numbers from the JSON files, whose metric keys are looked up by
name at any depth, so a result may nest them (``{"result": {"ppl": ...}}``) or give ``{"mean": .., "std": ..}``.
Missing results leave an empty cell ("–"), never a made-up number.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .io import atomic_write_text

MISSING = "–"
# metric names, most specific first
PPL_KEYS = ("mean_then_exp", "ppl_mean_then_exp", "ppl", "perplexity")
GEN_PPL_KEYS = ("gen_ppl", "generative_perplexity", "ppl", "perplexity")
ENTROPY_KEYS = ("unigram_entropy", "entropy", "mean_entropy")
UNIQUE_KEYS = ("unique_unigram_fraction", "unique_unigrams", "unique_fraction", "unique_unigram")
REP_KEYS = ("repetition_rate_100", "repetition_rate", "rep100", "rep_100", "repetition")
MAUVE_KEYS = ("mauve",)
CONT_PPL_KEYS = ("continuation_ppl", "continuation_perplexity", "cont_ppl")
BOUND_KEYS = ("bound", "upper_bound", "is_bound", "elbo")
LM_EVAL_TASKS = ("lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge", "winogrande")
TASK_TITLES = {"lambada_openai": "LAMBADA", "hellaswag": "HellaSwag", "piqa": "PIQA", "arc_easy": "ARC-e",
               "arc_challenge": "ARC-c", "winogrande": "WinoGrande"}


@dataclass
class Table:
    """A paper-shaped table: one row per model (or model + setting), one column per dataset/task/metric."""

    name: str
    title: str
    columns: list[str]
    rows: list[tuple[str, list[str]]] = field(default_factory=list)
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join([""] + self.columns) + " |")
        lines.append("|" + "---|" * (len(self.columns) + 1))
        if not self.rows:
            lines.append("| *(no results)* |" + f" {MISSING} |" * len(self.columns))
        for label, cells in self.rows:
            lines.append("| " + " | ".join([label] + cells) + " |")
        return "\n".join(lines) + "\n"

    def tsv(self) -> str:
        lines = ["\t".join(["model"] + self.columns)]
        lines += ["\t".join([label] + cells) for label, cells in self.rows]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- reading results


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _children(level: list[dict]) -> list[dict]:
    """The dicts one level down: dict values and the dicts inside list values (a result may list its entries)."""
    out = []
    for d in level:
        for v in d.values():
            if isinstance(v, dict):
                out.append(v)
            elif isinstance(v, list):
                out += [x for x in v if isinstance(x, dict)]
    return out


def find_stat(data, keys) -> tuple[float, float | None] | None:
    """(mean, std or None) of the first of `keys` found in `data`, breadth-first; None when absent.

    Accepts ``key: number`` (std from ``key_std``, or ``std_x`` for ``mean_x``), ``key: {"mean": m, "std": s}`` or ``key_mean``/``key_std``."""
    level = [data]
    while level:
        for key in keys:
            for d in level:
                value = d.get(key)
                if _number(value):
                    std = d.get(f"std_{key[5:]}" if key.startswith("mean_") else f"{key}_std")
                    return float(value), float(std) if _number(std) else None
                if isinstance(value, dict) and _number(value.get("mean")):
                    std = value.get("std")
                    return float(value["mean"]), float(std) if _number(std) else None
                if isinstance(value, dict) and _number(value.get("mean_then_exp")):  # a perplexity in both orders
                    return float(value["mean_then_exp"]), None
                if _number(d.get(f"{key}_mean")):
                    std = d.get(f"{key}_std")
                    return float(d[f"{key}_mean"]), float(std) if _number(std) else None
        level = _children(level)
    return None


def find_value(data, keys):
    """The first of `keys` found at any depth (breadth-first), any type; None when absent."""
    level = [data]
    while level:
        for key in keys:
            for d in level:
                if key in d:
                    return d[key]
        level = _children(level)
    return None


def is_bound(data: dict, kind: str | None = None) -> bool:
    """Whether a perplexity is an ELBO upper bound (SEDD) rather than exact (GPT-2): the result's own flag, else
    its model kind, else the kind the workflow recorded for the model."""
    flag = find_value(data, BOUND_KEYS)
    if isinstance(flag, bool):
        return flag
    found = find_value(data, ("kind", "model_kind", "model_type"))
    kind = found if isinstance(found, str) else kind
    return isinstance(kind, str) and kind.lower() == "sedd"


def fmt(stat, digits: int = 2, scale: float = 1.0, bound: bool = False) -> str:
    if stat is None or not math.isfinite(stat[0]):
        return MISSING
    mean, std = stat
    text = f"{mean * scale:.{digits}f}"
    if std is not None:
        text += f" ± {std * scale:.{digits}f}"
    return ("≤" + text) if bound else text


def _natural(text: str):
    """Sort key: 'T16' before 'T128'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _setting_label(model: str, setting: str) -> str:
    if re.fullmatch(r"T\d+", setting):
        return f"{model} (T = {setting[1:]})"
    return f"{model} ({setting})"


def model_kinds(results: Path) -> dict[str, str]:
    """{model: kind} from the workflow's record of the configured models (results/models.json), if present."""
    record = results / "models.json"
    if not record.is_file():
        return {}
    return {name: str(info.get("kind", "")) if isinstance(info, dict) else "" for name, info in read_json(record).items()}


def model_order(results: Path) -> list[str]:
    """Model names in a stable order: as listed in the workflow's run record if present, else sorted."""
    if model_kinds(results):
        return list(model_kinds(results))
    names = {p.name for p in (results / "eval").glob("*/*") if p.is_dir() and p.name != "data"}
    names |= {p.stem for p in (results / "eval" / "lm-eval").glob("*.json")}
    return sorted(names, key=_natural)


def _by_model(directory: Path, models: list[str]) -> dict[str, dict[str, dict]]:
    """{model: {setting: json}} for directory/<model>/<setting>.json."""
    out = {}
    for model in models:
        files = sorted((directory / model).glob("*.json"), key=lambda p: _natural(p.stem))
        if files:
            out[model] = {p.stem: read_json(p) for p in files}
    return out


# ---------------------------------------------------------------- tables


def zero_shot_table(results: Path, models: list[str]) -> Table:
    found = _by_model(results / "eval" / "zero-shot", models)
    kinds = model_kinds(results)
    datasets = sorted({d for per in found.values() for d in per}, key=_natural)
    table = Table("table1-zero-shot", "Table 1: zero-shot perplexity (↓; ≤ marks SEDD's ELBO bound)", datasets,
                  note="Mean-then-exp over all tokens of each dataset.")
    for model, per in found.items():
        table.rows.append((model, [fmt(find_stat(per[d], PPL_KEYS), bound=is_bound(per[d], kinds.get(model))) if d in per else MISSING
                                   for d in datasets]))
    return table


def _lm_eval_metrics(data: dict) -> dict[str, dict]:
    """Per-task metrics: pysedd's summary under the paper's task names if present, else lm-eval's own results
    ({task: {"acc,none": ..}}, a "_local" suffix of offline tasks dropped) wherever the JSON keeps them."""
    summary = data.get("pysedd", {}).get("metrics") if isinstance(data.get("pysedd"), dict) else None
    if isinstance(summary, dict) and summary:
        return summary
    level = [data]
    while level:
        for d in level:
            res = d.get("results")
            if isinstance(res, dict) and res and all(isinstance(v, dict) for v in res.values()):
                return {re.sub(r"_local$", "", task): metrics for task, metrics in res.items()}
        level = [v for d in level for v in d.values() if isinstance(v, dict)]
    return {}


def _task_cell(metrics: dict) -> str:
    def get(name):
        for key in (f"{name},none", name):
            if _number(metrics.get(key)):
                stderr = metrics.get(f"{name}_stderr,none", metrics.get(f"{name}_stderr"))
                return float(metrics[key]), float(stderr) if _number(stderr) else None
        return None

    acc, acc_norm = get("acc"), get("acc_norm")
    if acc is None and acc_norm is None:
        return fmt(get("perplexity"))
    text = fmt(acc, digits=1, scale=100.0)
    if acc_norm is not None:
        text += f" / {fmt(acc_norm, digits=1, scale=100.0)}"
    return text


def lm_eval_table(results: Path, models: list[str]) -> Table:
    found = {m: _lm_eval_metrics(read_json(results / "eval" / "lm-eval" / f"{m}.json"))
             for m in models if (results / "eval" / "lm-eval" / f"{m}.json").is_file()}
    tasks = [t for t in LM_EVAL_TASKS if any(t in r for r in found.values())]
    tasks += sorted({t for r in found.values() for t in r} - set(tasks))
    table = Table("table2-lm-eval", "Table 2: downstream tasks, accuracy % (↑; acc / acc_norm)",
                  [TASK_TITLES.get(t, t) for t in tasks])
    for model, per in found.items():
        table.rows.append((model, [_task_cell(per[t]) if t in per else MISSING for t in tasks]))
    return table


def gen_ppl_table(results: Path, models: list[str]) -> Table:
    table = Table("table3-gen-ppl", "Table 3: generative perplexity under the judge (↓) and unigram entropy",
                  ["gen. PPL", "entropy"])
    for model, per in _by_model(results / "eval" / "gen-ppl", models).items():
        for setting, data in per.items():
            table.rows.append((_setting_label(model, setting),
                               [fmt(find_stat(data, GEN_PPL_KEYS)), fmt(find_stat(data, ENTROPY_KEYS))]))
    return table


def diversity_table(results: Path, models: list[str]) -> Table:
    table = Table("table4-diversity", "Table 4: diversity of unconditional samples (mean ± std over samples)",
                  ["unique unigrams", "entropy", "rep-100"])

    def cells(data):
        return [fmt(find_stat(data, UNIQUE_KEYS), 3), fmt(find_stat(data, ENTROPY_KEYS)), fmt(find_stat(data, REP_KEYS), 3)]

    for path in sorted((results / "eval" / "diversity" / "data").glob("*.json")):
        table.rows.append((f"data ({path.stem})", cells(read_json(path))))
    for model, per in _by_model(results / "eval" / "diversity", models).items():
        for setting, data in per.items():
            table.rows.append((_setting_label(model, setting), cells(data)))
    return table


def _conditional_table(results: Path, models: list[str], name: str, title: str, keys, digits: int) -> Table:
    """Models as rows, canvases (gen-100, gen-1024) as columns; a causal model's single 'gen' fills every column."""
    found = _by_model(results / "eval" / "mauve", models)
    columns = sorted({s for per in found.values() for s in per if s != "gen"}, key=_natural) or ["gen"]
    table = Table(name, title, columns)
    for model, per in found.items():
        table.rows.append((model, [fmt(find_stat(per.get(c, per.get("gen", {})), keys), digits) for c in columns]))
    return table


def mauve_table(results: Path, models: list[str]) -> Table:
    return _conditional_table(results, models, "table5-mauve",
                              "Table 5: MAUVE of prompted continuations against the true ones (↑; mean ± std over seeds)",
                              MAUVE_KEYS, 3)


def continuation_ppl_table(results: Path, models: list[str]) -> Table:
    return _conditional_table(results, models, "table6-continuation-ppl",
                              "Table 6: perplexity of the continuations under the judge (↓)", CONT_PPL_KEYS, 2)


def latency_rows(data: dict) -> list[dict]:
    """The per-(model, steps) records of a latency result: a list under any of a few names, or the JSON itself."""
    for key in ("results", "rows", "measurements", "records"):
        value = find_value(data, (key,))
        if isinstance(value, list) and all(isinstance(r, dict) for r in value):
            return value
    return []


def latency_table(results: Path) -> Table:
    table = Table("latency", "Latency (Figure 1): wall time per batch (s, mean ± std) and throughput",
                  ["steps", "latency (s)", "tokens/s", "speed-up vs GPT-2"])
    path = results / "bench" / "latency.json"
    if not path.is_file():
        return table
    rows = latency_rows(read_json(path))
    ar = [r for r in rows if str(r.get("model", r.get("kind", ""))).lower().startswith("gpt")]
    ar_latency = find_stat(ar[0], ("mean_latency", "latency")) if ar else None
    for r in rows:
        latency = find_stat(r, ("mean_latency", "latency"))
        throughput = find_stat(r, ("mean_throughput", "throughput", "tokens_per_s"))
        speedup = (f"{ar_latency[0] / latency[0]:.2f}×" if latency and ar_latency and latency[0] > 0 else MISSING)
        if r in ar:
            speedup = "1.00×"
        label = str(r.get("label", r.get("model", r.get("kind", "?"))))
        if r.get("sampler"):
            label += f" ({r['sampler']})"
        steps = r.get("steps")
        table.rows.append((label, [str(steps) if steps is not None else MISSING, fmt(latency, 3),
                                   fmt(throughput, 1), speedup]))
    return table


def build_tables(results: str | Path) -> list[Table]:
    results = Path(results)
    if not results.is_dir():
        raise UserError(f"results directory {results} does not exist")
    models = model_order(results)
    return [zero_shot_table(results, models), lm_eval_table(results, models), gen_ppl_table(results, models),
            diversity_table(results, models), mauve_table(results, models), continuation_ppl_table(results, models),
            latency_table(results)]


def write_report(results: str | Path, out: str | Path, tables_dir: str | Path | None = None) -> list[Table]:
    """results/report.md with every table and the latency figure; optionally one TSV per table in tables_dir."""
    results, out = Path(results), Path(out)
    tables = build_tables(results)
    parts = ["# pysedd report: SEDD vs GPT-2", "",
             "Reproduction of the evaluation of *Promises, Outlooks and Challenges of Diffusion Language Modeling* "
             "(Deschenaux & Gulcehre 2024). Generated by `pysedd report` from the JSON results in "
             f"`{results}`; each number's exact settings are in its JSON file.", ""]
    for table in tables:
        parts.append(table.markdown())
        if table.name == "latency":
            figure = results / "bench" / "latency.png"
            if figure.is_file():
                parts += [f"![Figure 1: latency]({_relative(figure, out.parent)})", ""]
    atomic_write_text(out, "\n".join(parts))
    if tables_dir is not None:
        tables_dir = Path(tables_dir)
        tables_dir.mkdir(parents=True, exist_ok=True)
        for table in tables:
            atomic_write_text(tables_dir / f"{table.name}.tsv", table.tsv())
    return tables


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)
