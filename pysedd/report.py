"""The paper's tables from the evaluation results, each number beside the published one, and the plan of which
paper cells a workflow config fills.

The layout (rows, columns, published values, tolerances) comes from the paper's tables data (`pysedd.paper`); the
numbers from the result records (`pysedd.results`) that the evaluators write. A config is matched against the paper:
a paper model is the configured model with the same hub id, a GPT-2 sampling row the configured setting with the same
options, a SEDD row the configured step count. Cells the config fills are *planned*; a planned result that is missing
or malformed stops the report with an error naming the file. Configured rows and columns the paper does not have
(the demo's models, extra settings) are shown too, without a paper value; when no paper cell is planned at all (the
demo), the paper column is left out.

Result files, relative to the results directory (the workflow writes these):

    eval/zero-shot/<model>/<dataset>.json   eval/lm-eval/<model>.json
    eval/gen-ppl/<model>/<setting>.json     eval/gen-ppl/data/<name>.json      (real text)
    eval/diversity/<model>/<setting>.json   eval/diversity/data/<name>.json
    eval/mauve/<model>/<setting>.json       bench/latency.json
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import results as records
from .defaults import WORKFLOW as WORKFLOW_DEFAULTS
from .errors import UserError
from .io import atomic_write_text
from .paper import Column, Paper, Row, Table, load

MISSING = "–"

# What the plan takes for a key the config leaves out: pysedd's shared defaults (pysedd/defaults.py, which the
# workflow fills in too), the schema's structural ones, and None for the optional keys.
DEFAULTS = {**WORKFLOW_DEFAULTS, "zero_shot.datasets": {}, "lm_eval.tasks": [], "real_text": None, "latency.sedd": None,
            "latency.gpt2": None, "unconditional.models": None, "mauve.models": None}
SAMPLING_DEFAULTS = {"top_k": 0, "top_p": 1.0, "temperature": 1.0}  # ancestral sampling


def get(config: dict, key: str):
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return DEFAULTS[key]
        value = value[part]
    return value


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


# ---------------------------------------------------------------- the config's sources and settings


def subjects(config: dict, kind: str | None = None) -> list[str]:
    return [n for n, m in config["models"].items()
            if m.get("role", "subject") == "subject" and (kind is None or m["kind"] == kind)]


def kind_of(config: dict, model: str) -> str:
    return config["models"][model]["kind"]


def sedd_conditional_setting(canvas: int, steps: int) -> str:
    """The name of a SEDD prompted-sampling setting: its canvas and step count."""
    return f"gen-{canvas}-T{steps}"


def samples_of(config: dict, section: str, model: str) -> bool:
    """Whether `model` is sampled for `section` (unconditional or mauve): every subject unless the section lists models."""
    listed = get(config, f"{section}.models")
    return listed is None or model in listed


def unconditional_settings(config: dict, model: str) -> list[str]:
    if not samples_of(config, "unconditional", model):
        return []
    if kind_of(config, model) == "sedd":
        return [f"T{s}" for s in get(config, "unconditional.sedd.steps")]
    return list(get(config, "unconditional.gpt2"))


def conditional_settings(config: dict, model: str) -> list[str]:
    if not samples_of(config, "mauve", model):
        return []
    if kind_of(config, model) == "sedd":
        return [sedd_conditional_setting(c, s) for s in _list(get(config, "mauve.steps")) for c in get(config, "mauve.canvases")]
    return list(get(config, "mauve.gpt2"))


def real_text_name(config: dict) -> str | None:
    real = get(config, "real_text")
    return real["name"] if real else None


def result_files(config: dict) -> list[str]:
    """Every result the report of `config` reads, relative to the results directory (the workflow's targets)."""
    for section in ("unconditional", "mauve"):
        unknown = sorted(set(get(config, f"{section}.models") or ()) - set(subjects(config)))
        if unknown:
            raise UserError(f"config key '{section}.models': {', '.join(unknown)} is not a subject under 'models'")
    out = [f"eval/zero-shot/{m}/{d}.json" for m in subjects(config) for d in get(config, "zero_shot.datasets")]
    if get(config, "lm_eval.tasks"):
        out += [f"eval/lm-eval/{m}.json" for m in subjects(config)]
    for m in subjects(config):
        for s in unconditional_settings(config, m):
            out += [f"eval/gen-ppl/{m}/{s}.json", f"eval/diversity/{m}/{s}.json"]
        out += [f"eval/mauve/{m}/{s}.json" for s in conditional_settings(config, m)]
    if real_text_name(config):
        out.append(f"eval/gen-ppl/data/{real_text_name(config)}.json")
    if get(config, "diversity.reference") != "none":
        out.append(f"eval/diversity/data/{get(config, 'diversity.reference')}.json")
    out.append("bench/latency.json")
    return out


# ---------------------------------------------------------------- cells


@dataclass
class Cell:
    """One cell: where its number comes from (`path` + how to read it), or why the config cannot fill it."""

    path: str | None = None
    read: tuple = ()  # (record field, extra key) understood by `cell_value`
    paper: float | None = None
    reason: str = ""


@dataclass
class PlannedTable:
    table: Table
    rows: list[tuple[str, str | None]]  # (label, paper row id or None)
    columns: list[tuple[str, Column]]
    cells: dict[tuple[int, int], Cell] = field(default_factory=dict)
    of_paper_models: set[int] = field(default_factory=set)  # extra rows of configured models the paper evaluates

    def paper_cells(self) -> list[Cell]:
        paper_rows = [i for i, (_, rid) in enumerate(self.rows) if rid is not None]
        paper_cols = [j for j, (_, c) in enumerate(self.columns) if c in self.table.columns]
        return [self.cells[i, j] for i in paper_rows for j in paper_cols]


def _sampling(options: dict) -> dict:
    return {**SAMPLING_DEFAULTS, **{k: v for k, v in (options or {}).items() if k in SAMPLING_DEFAULTS}}


def _model_for(config: dict, paper: Paper, model: str) -> str | None:
    hub = paper.models[model].get("hub")
    found = [n for n in subjects(config) if config["models"][n].get("hub") == hub] if hub else []
    return found[0] if found else None


def _gpt2_setting(settings: dict, sampling: dict) -> str | None:
    return next((name for name, opts in settings.items() if _sampling(opts) == _sampling(sampling)), None)


def _source(config: dict, paper: Paper, table: Table, row: Row) -> tuple[str | None, str | None, str]:
    """(config model or data name, setting, reason when not configured) of a paper row."""
    ev = table.evaluation
    if row.data is not None:
        configured = real_text_name(config) if ev == "gen-ppl" else get(config, "diversity.reference")
        if configured != row.data:
            what = "real_text.name" if ev == "gen-ppl" else "diversity.reference"
            return None, None, f"config key {what} is not {row.data!r}"
        return row.data, None, ""
    spec = paper.models[row.model]
    if ev == "latency":
        side = get(config, f"latency.{spec['kind']}")
        if side != spec["preset"] or get(config, "latency.length") != table.length:
            return None, None, (f"latency.{spec['kind']} is not {spec['preset']!r} at length {table.length}")
        if row.steps is not None and row.steps not in get(config, "latency.steps"):
            return None, None, f"latency.steps has no {row.steps}"
        return spec["kind"], None if row.steps is None else str(row.steps), ""
    model = _model_for(config, paper, row.model)
    if model is None:
        return None, None, f"no configured {spec['kind']} model with hub id {spec['hub']!r}"
    section = "mauve" if ev == "mauve" else "unconditional"
    if ev in ("gen-ppl", "diversity", "mauve") and not samples_of(config, section, model):
        return None, None, f"{section}.models does not list {model!r}"
    if row.sampling is not None:
        key = "mauve.gpt2" if ev == "mauve" else "unconditional.gpt2"
        setting = _gpt2_setting(get(config, key), row.sampling)
        return (model, setting, "") if setting else (None, None, f"{key} has no setting with {row.sampling}")
    if row.steps is not None:
        key = "mauve.steps" if ev == "mauve" else "unconditional.sedd.steps"
        if row.steps not in _list(get(config, key)):
            return None, None, f"{key} has no {row.steps}"
        return model, f"T{row.steps}", ""
    return model, None, ""


def _cell(config: dict, table: Table, source: str, setting: str | None, column: Column) -> Cell:
    """Where the number of (source, setting) x column is read from, or why it cannot be."""
    ev = table.evaluation
    if ev == "zero-shot":
        names = [d for d, spec in get(config, "zero_shot.datasets").items()
                 if d == column.name or spec.get("corpus") == column.corpus]
        if not names:
            return Cell(reason=f"no zero_shot dataset of corpus {column.corpus!r}")
        return Cell(f"eval/zero-shot/{source}/{names[0]}.json", ("ppl",))
    if ev == "lm-eval":
        if column.task not in get(config, "lm_eval.tasks"):
            return Cell(reason=f"lm_eval.tasks has no {column.task!r}")
        return Cell(f"eval/lm-eval/{source}.json", ("tasks", column.task, column.metric))
    if ev in ("gen-ppl", "diversity"):
        path = f"eval/{ev}/data/{source}.json" if setting is None else f"eval/{ev}/{source}/{setting}.json"
        return Cell(path, (column.metric,))
    if ev == "mauve":
        if kind_of(config, source) == "sedd":
            if column.canvas not in get(config, "mauve.canvases"):
                return Cell(reason=f"mauve.canvases has no {column.canvas}")
            setting = sedd_conditional_setting(column.canvas, int(setting[1:]))
        return Cell(f"eval/mauve/{source}/{setting}.json", (column.metric,))
    if ev == "latency":
        return Cell("bench/latency.json", (column.metric, source, setting))
    raise ValueError(f"unknown evaluation {ev!r}")


def _extra_rows(config: dict, table: Table, taken: set) -> list[tuple[str, str, str | None]]:
    """(label, source, setting) of configured rows that are no paper row of this table."""
    ev = table.evaluation
    out = []
    if ev in ("zero-shot", "lm-eval"):
        out = [(m, m, None) for m in subjects(config)]
    elif ev in ("gen-ppl", "diversity"):
        data = real_text_name(config) if ev == "gen-ppl" else get(config, "diversity.reference")
        if data and data != "none":
            out.append((f"data ({data})", data, None))
        out += [(f"{m} ({s})", m, s) for m in subjects(config) for s in unconditional_settings(config, m)]
    elif ev == "mauve":
        for m in filter(lambda m: samples_of(config, "mauve", m), subjects(config)):
            settings = ([f"T{s}" for s in _list(get(config, "mauve.steps"))] if kind_of(config, m) == "sedd"
                        else list(get(config, "mauve.gpt2")))
            out += [(f"{m} ({s})", m, s) for s in settings]
    elif ev == "latency":
        out = [(f"SEDD ({s} steps)", "sedd", str(s)) for s in get(config, "latency.steps")] + [("GPT-2 + KV cache", "gpt2", None)]
    return [r for r in out if (r[1], r[2]) not in taken]


def _extra_columns(config: dict, table: Table) -> list[tuple[str, Column]]:
    """Configured datasets/tasks/canvases that are no paper column, shown with the paper's metric and tolerance."""
    first = table.columns[0]
    if table.evaluation == "zero-shot":
        known = {c.corpus for c in table.columns} | {c.name for c in table.columns}
        return [(d, Column(d, first.metric, first.diff, first.tolerance, corpus=spec.get("corpus")))
                for d, spec in get(config, "zero_shot.datasets").items() if d not in known and spec.get("corpus") not in known]
    if table.evaluation == "lm-eval":
        known = {c.task for c in table.columns}
        return [(t, Column(t, "acc", "absolute", first.tolerance, task=t)) for t in get(config, "lm_eval.tasks") if t not in known]
    if table.evaluation == "mauve":
        known = {c.canvas for c in table.columns}
        return [(f"MAUVE gen-{c}", Column(f"MAUVE gen-{c}", "mauve", "absolute", first.tolerance, canvas=c))
                for c in get(config, "mauve.canvases") if c not in known]
    return []


def ev_has_models(table: Table) -> bool:
    return table.evaluation != "zero-shot" and table.evaluation != "lm-eval"


def plan(config: dict, paper: Paper | None = None) -> list[PlannedTable]:
    """Every table of the paper laid out for `config`: the paper's rows and columns (planned or not) followed by the
    configured ones the paper does not have."""
    paper = paper or load()
    out = []
    for table in paper.tables:
        columns = [(c.name, c) for c in table.columns] + _extra_columns(config, table)
        rows, cells, taken = [], {}, set()
        for row in table.rows:
            source, setting, reason = _source(config, paper, table, row)
            i = len(rows)
            rows.append((row.label, row.id))
            if source is not None:
                taken.add((source, setting))
            for j, (_, col) in enumerate(columns):
                cell = _cell(config, table, source, setting, col) if source is not None else Cell(reason=reason)
                cell.paper = table.value(row, col) if col in table.columns else None
                cells[i, j] = cell
        paper_models = {_model_for(config, paper, m) for m in paper.models} | {"sedd", "gpt2"}
        extra = []
        for label, source, setting in _extra_rows(config, table, taken):
            i = len(rows)
            rows.append((label, None))
            if source in paper_models and ev_has_models(table):
                extra.append(i)
            for j, (_, col) in enumerate(columns):
                cells[i, j] = _cell(config, table, source, setting, col)
        out.append(PlannedTable(table, rows, columns, cells, set(extra)))
    return out


def plan_text(planned: list[PlannedTable]) -> str:
    """Per table, the paper cells the config fills (and from which result) and those it cannot, then the count."""
    lines, n_planned, n_total = [], 0, 0
    for p in planned:
        paper_cells = [(p.rows[i][0], p.columns[j][0], c) for (i, j), c in p.cells.items()
                       if p.rows[i][1] is not None and p.columns[j][1] in p.table.columns]
        filled = [x for x in paper_cells if x[2].path]
        n_planned, n_total = n_planned + len(filled), n_total + len(paper_cells)
        lines.append(f"{p.table.title}: {len(filled)}/{len(paper_cells)} paper cells planned")
        for row, col, cell in paper_cells:
            lines.append(f"  {'planned' if cell.path else 'cannot '} {row} × {col}: {cell.path or cell.reason}")
    lines.append(f"paper cells planned: {n_planned}/{n_total}")
    return "\n".join(lines)


# ---------------------------------------------------------------- values


def cell_value(results: Path, cell: Cell, cache: dict):
    """(value, std or None, bound) of a planned cell from its result record; UserError when it is missing."""
    path = results / cell.path
    ev = {"zero-shot": "zero-shot", "lm-eval": "lm-eval", "gen-ppl": "gen-ppl", "diversity": "diversity",
          "mauve": "mauve", "bench": "latency"}[cell.path.split("/")[1 if cell.path.startswith("eval/") else 0]]
    if path not in cache:
        cache[path] = records.read_entries(path, ev) if ev == "latency" else records.read_one(path, ev)
    rec = cache[path]
    metric = cell.read[0]
    if ev == "latency":
        return _latency_value(path, rec, *cell.read)
    if metric == "tasks":
        task, name = cell.read[1], cell.read[2]
        value = rec.tasks.get(task, {}).get(name)
        if value is None:
            raise UserError(f"{path}: record has no {name} for task {task!r}")
        return 100.0 * value, None, False
    value = getattr(rec, metric)
    if isinstance(value, records.Stat):
        return value.mean, value.std, False
    return value, None, getattr(rec, "bound", False)


def _latency_value(path: Path, entries: list, metric: str, side: str, steps: str | None):
    def find(kind, steps):
        rows = [e for e in entries if e.model == kind and (steps is None or e.steps == int(steps))
                and (kind == "sedd" or e.steps is None)]
        if not rows:
            raise UserError(f"{path}: no latency record for {kind}" + (f" at {steps} steps" if steps else ""))
        return rows[0]

    entry = find(side, steps)
    if metric == "latency":
        return entry.latency.mean, entry.latency.std, False
    if side == "gpt2":
        return 1.0, None, False
    return find("gpt2", None).latency.mean / entry.latency.mean, None, False


def difference(value: float, paper: float, column: Column) -> float:
    return (value - paper) / paper if column.diff == "relative" else value - paper


DIGITS = {"ppl": 2, "gen_ppl": 2, "continuation_ppl": 2, "acc": 2, "acc_norm": 2, "unique_unigrams": 3,
          "entropy": 2, "repetition": 3, "mauve": 3, "latency": 3, "speedup": 2}


def fmt(value: float, std: float | None, bound: bool, column: Column) -> str:
    d = DIGITS.get(column.metric, 2)
    text = f"{value:.{d}f}" + (f" ± {std:.{d}f}" if std is not None else "")
    return ("≤" if bound else "") + text + ("×" if column.metric == "speedup" else "")


def fmt_diff(diff: float, column: Column) -> str:
    if column.diff == "relative":
        return f"{100 * diff:+.1f}%"
    return f"{diff:+.{DIGITS.get(column.metric, 2)}f}"


def tolerance_text(column: Column) -> str:
    if column.diff == "relative":
        return f"±{100 * column.tolerance:g}% relative"
    return f"±{column.tolerance:g} absolute"


# ---------------------------------------------------------------- rendering


@dataclass
class Rendered:
    """A table as text cells, renderable as markdown or HTML."""

    name: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    summary: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", self.caption, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "---|" * len(self.header))
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.summary:
            lines += ["", self.summary]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        summary = f"<p>{esc(self.summary)}</p>" if self.summary else ""
        return (f"<h3>{esc(self.title)}</h3><p>{esc(self.caption)}</p><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>{summary}\n")

    def tsv(self) -> str:
        return "\n".join("\t".join(r) for r in [self.header] + self.rows) + "\n"


def render(results: Path, p: PlannedTable, with_paper: bool, cache: dict) -> Rendered:
    """Rows and columns of one table; each planned cell's value (read now: a missing result is an error) and, with
    the paper, the published value and the difference, plus how many cells are within tolerance."""
    keep_rows = [i for i, (_, rid) in enumerate(p.rows) if (with_paper and rid is not None)
                 or (any(p.cells[i, j].path for j in range(len(p.columns))) and not (with_paper and i in p.of_paper_models))]
    keep_cols = [j for j, (_, c) in enumerate(p.columns) if (with_paper and c in p.table.columns)
                 or any(p.cells[i, j].path for i in keep_rows)]
    header = ["model"]
    for j in keep_cols:
        name, col = p.columns[j]
        header.append(name + (" (repro · paper · diff)" if with_paper and col in p.table.columns else ""))
    if p.table.evaluation == "zero-shot" or p.table.evaluation == "lm-eval":
        header.insert(1, "params")
    body, compared, within = [], 0, 0
    for i in keep_rows:
        label, rid = p.rows[i]
        row = [label]
        if len(header) > len(keep_cols) + 1:
            model = next((r.model for r in p.table.rows if r.id == rid), None)
            row.append(load().models[model]["params"] if model else MISSING)
        for j in keep_cols:
            col, cell = p.columns[j][1], p.cells[i, j]
            text = MISSING
            if cell.path:
                value, std, bound = cell_value(results, cell, cache)
                text = fmt(value, std, bound, col)
            if with_paper and rid is not None and col in p.table.columns:
                paper = "n/a" if cell.paper is None else fmt(cell.paper, None, False, col)
                text = f"{text if cell.path else 'not planned'} · {paper}"
                if cell.path and cell.paper is not None:
                    diff = difference(value, cell.paper, col)
                    ok = abs(diff) <= col.tolerance
                    compared, within = compared + 1, within + ok
                    text += f" · {fmt_diff(diff, col)}{' ✓' if ok else ''}"
            row.append(text)
        body.append(row)
    summary = ""
    if with_paper:
        tol = "; ".join(sorted({f"{c.name}: {tolerance_text(c)}" for c in p.table.columns}))
        summary = (f"Within tolerance of the paper: {within}/{compared} cells with a published value ({tol}). "
                   f"n/a: no published value available to the project.")
    caption = p.table.caption + (f" Paper: {p.table.notes}." if with_paper and p.table.notes else "")
    return Rendered(p.table.id, p.table.title, caption, header, body, summary)


def latency_figure(results: Path, planned: PlannedTable, out: Path, cache: dict) -> bool:
    """Figure 1: SEDD latency against steps (x axis), GPT-2 + KV cache as a horizontal line."""
    path = results / "bench" / "latency.json"
    if not any(c.path for c in planned.cells.values()):
        return False
    if path not in cache:
        cache[path] = records.read_entries(path, "latency")
    entries = cache[path]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sedd = sorted((e for e in entries if e.model == "sedd" and e.steps), key=lambda e: e.steps)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([e.steps for e in sedd], [e.latency.mean for e in sedd], [e.latency.std or 0 for e in sedd],
                marker="o", label="SEDD")
    for e in entries:
        if e.model == "gpt2":
            ax.axhline(e.latency.mean, color="tab:red", ls="--", label="GPT-2 + KV cache")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(f"latency (s), L = {sedd[0].length if sedd else '?'}")
    ax.set_title("Figure 1: latency")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, out)
    return True


# --- the quality-latency frontier (docs/distillation.md): `pysedd bench frontier` and the report's last section

FRONTIER_FAMILIES = ("SEDD analytic", "SEDD first-hitting", "SEDD distilled", "GPT-2")


def frontier_table(points: list) -> Rendered:
    """The frontier's points (results.FrontierPoint) as a table; latency also as a multiple of the fastest GPT-2."""
    first = points[0]
    calls = -(-first.num_samples // first.batch_size)
    gpt2 = [p.latency for p in points if p.family == "GPT-2"]
    caption = (f"{first.num_samples} samples of {first.length} tokens per point, batches of {first.batch_size}, on "
               f"{first.device}; generative perplexity under {first.judge} (exp of the mean per-sample NLL); entropy: "
               f"unigram, nats, mean ± std over samples. Down and to the left is better; read perplexity with the "
               f"entropy beside it.")
    header = ["family", "sampler", "NFE / batch", "latency / sample (ms)", "x GPT-2 latency", "gen PPL", "entropy"]
    rows = [[p.family, p.name, f"{p.nfe / calls:.0f}", f"{p.latency * 1e3:.2f}",
             f"{p.latency / min(gpt2):.2f}" if gpt2 else MISSING, f"{p.gen_ppl:.2f}",
             f"{p.entropy.mean:.3f} ± {p.entropy.std or 0.0:.3f}"] for p in points]
    return Rendered("frontier", "Quality-latency frontier", caption, header, rows)


def frontier_plot(points: list, path: str | Path) -> None:
    """Judge perplexity against latency per sample (both log), one curve per sampler family, each point annotated
    with its sampler and unigram entropy H."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

    first = points[0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"SEDD analytic": "o-", "SEDD first-hitting": "s-", "SEDD distilled": "D-", "GPT-2": "*"}
    for family in FRONTIER_FAMILIES:
        rows = sorted((p for p in points if p.family == family), key=lambda p: p.latency)
        if not rows:
            continue
        ax.plot([p.latency for p in rows], [p.gen_ppl for p in rows], styles[family],
                ms=12 if family == "GPT-2" else 6, label=family)
        for p in rows:
            ax.annotate(f"{p.name}\nH={p.entropy.mean:.2f}", (p.latency, p.gen_ppl), textcoords="offset points",
                        xytext=(4, 4), fontsize=6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency per sample (s, log)")
    ax.set_ylabel(f"generative perplexity under {first.judge}", fontsize=8)
    ax.set_title(f"{first.num_samples} x {first.length} tokens, {first.device}; H = unigram entropy", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def run_settings(table_id: str, config: dict) -> str:
    """The settings `config` used for a table, stated beside the paper's caption (which describes the paper's setup),
    so that a run with fewer prompts, seeds or samples never reads as the paper's protocol."""
    def opt(key, default="default"):
        try:
            return get(config, key)
        except KeyError:
            return default

    draws = "categorical draws {}".format
    if table_id == "table1":
        return f"{opt('zero_shot.options.mc_samples')} stratified draws of t per chunk for SEDD's bound"
    if table_id == "table2":
        return (f"{opt('lm_eval.options.mc_samples')} draws of t per request for SEDD, EOS framing "
                f"{opt('lm_eval.options.eos_framing')}")
    if table_id in ("table3", "table4"):
        text = (f"{opt('unconditional.num_samples')} samples of {opt('unconditional.length')} tokens; SEDD "
                f"{opt('unconditional.sedd.sampler')} sampler, {draws(opt('unconditional.sedd.categorical', 'float64'))}")
        if table_id == "table3":
            return f"{text}; judge {opt('judge', 'not set')}"
        return (f"{text}; repetition window {opt('diversity.window')}, paper column "
                f"{opt('diversity.repetition_ngram')}-grams")
    if table_id in ("table5", "table6"):
        seeds = _list(opt("mauve.seeds"))
        return (f"{opt('mauve.prompts.num_prompts')} prompts of {opt('mauve.prompt_len')} tokens, "
                f"{opt('mauve.gen_len')}-token continuations, SEDD canvases {'/'.join(map(str, _list(opt('mauve.canvases'))))}"
                f" with {opt('mauve.sampler')} sampling and {draws(opt('mauve.categorical', 'float64'))}; MAUVE on "
                f"{opt('mauve.features')} features (max {opt('mauve.max_text_length')} tokens), {len(seeds)} k-means "
                f"seed(s); judge {opt('judge', 'not set')}")
    if table_id == "table7":
        return (f"batch {opt('latency.batch_size')} × {opt('latency.length')} tokens, {opt('latency.repeats')} timed "
                f"runs after {opt('latency.warmup')} warm-up(s); SEDD {opt('latency.sedd') or 'tiny'}, GPT-2 "
                f"{opt('latency.gpt2') or 'tiny'}")
    return ""


def build(results: str | Path, config: dict) -> tuple[list[Rendered], bool, list[PlannedTable]]:
    """The rendered tables of the results of `config`; with the paper beside when any paper cell is planned."""
    results = Path(results)
    if not results.is_dir():
        raise UserError(f"results directory {results} does not exist")
    planned = plan(config)
    with_paper = any(c.path for p in planned for c in p.paper_cells())
    cache: dict = {}
    tables = [render(results, p, with_paper, cache) for p in planned]
    for t in tables:
        settings = run_settings(t.name, config)
        if settings:
            t.caption = f"Paper: {t.caption} This run: {settings}."
    return tables, with_paper, planned


def write_report(results: str | Path, config: dict, out: str | Path, tables_dir: str | Path | None = None,
                 frontier: str | Path | None = None) -> list[Rendered]:
    """results/report.md with every table and Figure 1, and with `frontier` (a `pysedd bench frontier` result) the
    quality-latency frontier as a last section; optionally one .html and .tsv per table (and the figures' PNGs) in
    tables_dir for `snakemake --report`."""
    results, out = Path(results), Path(out)
    tables, with_paper, planned = build(results, config)
    points = records.read_entries(frontier, "frontier") if frontier is not None else None
    figure_dir = Path(tables_dir) if tables_dir is not None else out.parent
    figure = figure_dir / "figure1-latency.png"
    has_figure = latency_figure(results, next(p for p in planned if p.table.figure), figure, {})
    paper = load()
    parts = ["# pysedd report: SEDD vs GPT-2", "",
             f"Reproduction of the evaluation of *{paper.title}* (arXiv {paper.arxiv}), generated by `pysedd report` "
             f"from the result records in `{results}`."
             + (" Each paper cell shows the reproduced value · the published value · the difference (relative for "
                "perplexities, absolute for accuracies, MAUVE and diversity); ✓ marks a difference within the table's "
                "tolerance." if with_paper else " The configured models are not the paper's: no paper values shown."), ""]
    for t in tables:
        parts.append(t.markdown())
        if t.name == "table7" and has_figure:
            parts += [f"![Figure 1: latency]({os.path.relpath(figure, out.parent)})", ""]
    if points:
        frontier_figure = figure_dir / "frontier.png"
        frontier_plot(points, frontier_figure)
        tables.append(frontier_table(points))
        parts += [tables[-1].markdown(), f"![quality-latency frontier]({os.path.relpath(frontier_figure, out.parent)})",
                  ""]
    atomic_write_text(out, "\n".join(parts))
    if tables_dir is not None:
        for t in tables:
            atomic_write_text(Path(tables_dir) / f"{t.name}.html", t.html())
            atomic_write_text(Path(tables_dir) / f"{t.name}.tsv", t.tsv())
    return tables
