"""The paper's tables as data: rows, columns and published values of Deschenaux & Gulcehre (2024), read from
tables.yaml (package data). The report and the plan read the layout from here and nowhere else."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TABLES_FILE = Path(__file__).with_name("tables.yaml")


@dataclass(frozen=True)
class Column:
    name: str
    metric: str
    diff: str  # "relative" or "absolute"
    tolerance: float
    corpus: str | None = None  # Table 1
    task: str | None = None  # Table 2
    canvas: int | None = None  # Tables 5-6


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    model: str | None = None  # a key of Paper.models
    data: str | None = None  # a real-text row (Tables 3-4)
    sampling: dict | None = None  # GPT-2 sampling options
    steps: int | None = None  # SEDD steps


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    caption: str
    evaluation: str
    rows: list[Row]
    columns: list[Column]
    values: dict[str, list]  # row id -> published value per column (None: not available)
    notes: str = ""
    figure: bool = False
    length: int | None = None

    def value(self, row: Row, column: Column) -> float | None:
        values = self.values.get(row.id)
        return None if values is None else values[self.columns.index(column)]


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str
    models: dict[str, dict]
    tables: list[Table] = field(default_factory=list)


@functools.cache
def load(path: str | Path = TABLES_FILE) -> Paper:
    """The paper's tables, rows normalised (a bare model key is a row of that model) and value lists checked."""
    raw = yaml.safe_load(Path(path).read_text())
    models = raw["models"]
    tables = []
    for t in raw["tables"]:
        rows = [Row(id=r, label=models[r]["label"], model=r) if isinstance(r, str) else Row(**r) for r in t["rows"]]
        columns = [Column(**c) for c in t["columns"]]
        values = t.get("values") or {}
        for row_id, vals in values.items():
            if row_id not in {r.id for r in rows} or len(vals) != len(columns):
                raise ValueError(f"{path}: {t['id']} values of {row_id!r} do not match its rows/columns")
        for r in rows:
            if r.model is not None and r.model not in models:
                raise ValueError(f"{path}: {t['id']} row {r.id!r} names unknown model {r.model!r}")
        tables.append(Table(id=t["id"], title=t["title"], caption=t["caption"], evaluation=t["evaluation"], rows=rows,
                            columns=columns, values=values, notes=t.get("notes", ""), figure=t.get("figure", False),
                            length=t.get("length")))
    return Paper(title=raw["paper"]["title"], arxiv=raw["paper"]["arxiv"], models=models, tables=tables)
