"""The report's TSV tables as self-contained HTML pages, which `snakemake --report` shows inline (a TSV is only
offered as a download). Usage: html_tables.py TABLE.tsv... (writes TABLE.html beside each)."""
import csv
import html
import sys
from pathlib import Path

STYLE = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
         "th,td{border:1px solid #999;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}"
         "th{background:#eee}")

for name in sys.argv[1:]:
    path = Path(name)
    rows = list(csv.reader(path.open(newline=""), delimiter="\t"))
    head, body = (rows[0], rows[1:]) if rows else ([], [])
    cells = lambda row, tag: "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row)  # noqa: E731
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(path.stem)}</title>"
            f"<style>{STYLE}</style></head><body><table><thead><tr>{cells(head, 'th')}</tr></thead><tbody>"
            + "".join(f"<tr>{cells(row, 'td')}</tr>" for row in body)
            + ("" if body else f"<tr><td colspan='{max(len(head), 1)}'>no results</td></tr>")
            + "</tbody></table></body></html>\n")
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path.with_suffix(".html"))
