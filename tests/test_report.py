"""The report and the plan against the paper, from synthetic result records written with the records module the
evaluators use: every table laid out as the paper's, each cell beside the published value, tolerance counts, a
missing or malformed result stops the report, and the plan of config/paper.yaml covers every paper cell."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pysedd import results as records
from pysedd.commands.report import load_config, merge
from pysedd.errors import UserError
from pysedd.paper import load
from pysedd.report import build, plan, plan_text, result_files, write_report

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"
DEMO = REPO / "config.yaml"


def _write(root: Path, rel: str, evaluation: str, entries: list) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"evaluation": evaluation, "record": records.record(evaluation, entries)}))


def fake_results(root: Path, config: dict, window: int = 100) -> None:
    """One record per result file the config's report reads, with the paper's value where the paper has one (so
    every comparable cell is within tolerance) and 1.5 x a column's first value elsewhere."""
    lm, latency = {}, {}
    for p in plan(config):
        for (i, j), cell in p.cells.items():
            if not cell.path:
                continue
            col = p.columns[j][1]
            v = cell.paper if cell.paper is not None else {"acc": 40.0, "acc_norm": 40.0, "mauve": 0.9,
                                                           "repetition": 0.3, "unique_unigrams": 0.6}.get(col.metric, 30.0)
            ev = p.table.evaluation
            if ev == "zero-shot":
                model = cell.path.split("/")[2]
                _write(root, cell.path, ev, [records.ZeroShot(model, v, v + 1, config["models"][model]["kind"] == "sedd")])
            elif ev == "lm-eval":
                lm.setdefault(cell.path, {}).setdefault(cell.read[1], {})[cell.read[2]] = v / 100
            elif ev == "gen-ppl":
                _write(root, cell.path, ev, [records.GenPPL("s", v, "b", records.Stat(5.5, 0.2))])
            elif ev == "diversity":
                _write(root, cell.path, ev, [records.Diversity("s", records.Stat(0.6, 0.05), records.Stat(5.5, 0.2),
                                                               records.Stat(0.3, 0.02), records.Stat(0.39, 0.04), window, 3)])
            elif ev == "mauve":
                _write(root, cell.path, ev, [records.Mauve("s", "x", records.Stat(0.9, 0.01), 30.0)])
            elif ev == "latency" and col.metric == "latency":
                latency[cell.read[1:]] = 1.0
    for path, tasks in lm.items():
        _write(root, path, "lm-eval", [records.LmEval("m", tasks)])
    steps = [int(s) for kind, s in latency if kind == "sedd"]
    entries = [records.Latency(f"sedd T={s}", "sedd", "analytic", s, records.Stat(9.0 / 4.5 * s / 64, 0.01),
                               records.Stat(1.0, 0.1), 2048, 1, 10) for s in steps]
    entries.append(records.Latency("gpt2", "gpt2", "ancestral+kv", None, records.Stat(9.0, 0.1), records.Stat(1, 0), 2048, 1, 10))
    _write(root, "bench/latency.json", "latency", entries)


def paper_config() -> dict:
    return load_config([str(PAPER)])


def test_paper_tables_data_has_every_table_and_the_published_values():
    paper = load()
    assert [t.id for t in paper.tables] == [f"table{n}" for n in range(1, 8)]
    t1 = paper.tables[0]
    assert [c.name for c in t1.columns] == ["LAMBADA", "WikiText2", "PTB", "WikiText103", "1BW"]
    assert [r.id for r in t1.rows] == ["gpt2-small", "sedd-small", "gpt2-medium", "sedd-medium", "gpt2-large"]
    assert t1.values["sedd-medium"] == [42.385, 28.855, 83.411, 28.54, 60.97]
    assert [paper.models[r.model]["params"] for r in t1.rows] == ["124M", "170M", "355M", "424M", "774M"]
    t3, t5 = paper.tables[2], paper.tables[4]
    assert [r.label for r in t3.rows][:4] == ["OpenWebText", "GPT-2 (reg)", "GPT-2 (top-p 0.95)", "SEDD (100 steps)"]
    assert [c.name for c in t5.columns] == ["MAUVE gen-1024", "MAUVE gen-100", "Continuation PPL"]
    assert [r.steps for r in t5.rows if r.steps] == [128, 256, 512, 1024]
    # a value the project could not read is null, never a guess
    assert paper.tables[1].values == {} and paper.tables[3].values == {"owt": [0.49, 5.14, 0.033]}


def test_paper_config_plans_every_cell():
    text = plan_text(plan(paper_config()))
    assert text.splitlines()[-1] == "paper cells planned: 137/137"
    assert "cannot" not in text


def test_plan_names_what_a_config_lacks():
    config = paper_config()
    config["unconditional"]["sedd"]["steps"] = [256, 512, 1024]
    del config["models"]["gpt2-large"]
    config["judge"] = "gpt2-medium"
    text = plan_text(plan(config))
    assert "cannot  SEDD (100 steps) × Gen. PPL: unconditional.sedd.steps has no 100" in text
    assert "cannot  GPT-2 large × LAMBADA: no configured gpt2 model with hub id 'gpt2-large'" in text
    assert text.splitlines()[-1] == "paper cells planned: 122/137"  # 11 GPT-2 large cells, 4 at 100 steps


def test_report_of_a_paper_scale_run_shows_the_paper_beside_each_cell(tmp_path):
    config = paper_config()
    fake_results(tmp_path, config)
    tables = {t.name: t for t in write_report(tmp_path, config, tmp_path / "report.md", tmp_path / "tables")}
    t1 = tables["table1"]
    assert t1.header == ["model", "params"] + [f"{c} (repro · paper · diff)" for c in
                                                ("LAMBADA", "WikiText2", "PTB", "WikiText103", "1BW")]
    assert t1.rows[0][:3] == ["GPT-2 small", "124M", "44.66 · 44.66 · +0.0% ✓"]
    assert t1.rows[1][2] == "≤51.15 · 51.15 · +0.0% ✓"  # SEDD: an ELBO bound
    assert "Within tolerance of the paper: 25/25 cells" in t1.summary
    t2 = tables["table2"]  # accuracy in percent, two decimals; no published value: n/a, not compared
    assert t2.rows[0][2] == "40.00 · n/a" and "0/0 cells" in t2.summary
    assert "acc_norm" in t2.caption
    t4 = tables["table4"]
    assert t4.rows[0] == ["OpenWebText", "0.600 ± 0.050 · 0.490 · +0.110", "5.50 ± 0.20 · 5.14 · +0.36",
                          "0.300 ± 0.020 · 0.033 · +0.267"]
    t5 = tables["table5"]
    assert [r[0] for r in t5.rows] == ["GPT-2 (reg)", "GPT-2 (top-p 0.95)", "GPT-2 (top-k 50)", "SEDD (128 steps)",
                                       "SEDD (256 steps)", "SEDD (512 steps)", "SEDD (1024 steps)"]
    assert len(t5.header) == 4 and len(tables["table6"].rows) == 7
    # captions: the paper's setup, then what this config ran (read back from the config, not the paper)
    mauve = config["mauve"]
    assert t5.caption.startswith("Paper: ") and (
        f"This run: {mauve['prompts']['num_prompts']} prompts of {mauve['prompt_len']} tokens" in t5.caption)
    assert f"{len(mauve['seeds'])} k-means seed(s)" in t5.caption
    assert f"{config['unconditional']['num_samples']} samples of {config['unconditional']['length']} tokens" in \
        tables["table3"].caption
    t7 = tables["table7"]
    assert t7.rows[0][2] == "4.50× · 4.50× · +0.0% ✓"  # 9.0 s / 2.0 s against the abstract's 4.5x
    text = (tmp_path / "report.md").read_text()
    assert "![Figure 1: latency](tables/figure1-latency.png)" in text
    assert (tmp_path / "tables" / "figure1-latency.png").stat().st_size > 1000
    html = (tmp_path / "tables" / "table1.html").read_text()
    assert "<th>LAMBADA (repro · paper · diff)</th>" in html and "<td>GPT-2 small</td>" in html


def test_report_of_the_demo_leaves_the_paper_out(tmp_path):
    config = load_config([str(DEMO)])
    fake_results(tmp_path, config, window=50)  # a schema-valid window other than 100 must still show
    tables, with_paper, _ = build(tmp_path, config)
    assert not with_paper
    by = {t.name: t for t in tables}
    assert by["table1"].header == ["model", "params", "demo-heldout"]
    assert by["table1"].rows == [["sedd", "–", "≤30.00"], ["gpt2", "–", "30.00"]]
    assert by["table4"].rows[0] == ["data (heldout)", "0.600 ± 0.050", "5.50 ± 0.20", "0.300 ± 0.020"]
    assert all("·" not in c for t in tables for r in t.rows for c in r)
    assert [r[0] for r in by["table5"].rows] == ["sedd (T16)", "gpt2 (ancestral)"]


def test_missing_or_malformed_result_stops_the_report(tmp_path):
    config = load_config([str(DEMO)])
    fake_results(tmp_path, config)
    victim = tmp_path / "eval/gen-ppl/sedd/T32.json"
    data = json.loads(victim.read_text())
    del data["record"]["entries"][0]["gen_ppl"]
    victim.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"T32.json: record.entries\[0\]: missing field 'gen_ppl'"):
        build(tmp_path, config)
    victim.unlink()
    with pytest.raises(UserError, match=r"T32.json is missing"):
        build(tmp_path, config)
    victim.write_text(json.dumps({"gen_ppl": 30.0}))  # an old result without a record
    with pytest.raises(UserError, match="no 'record' block"):
        build(tmp_path, config)


def test_result_files_are_the_workflow_targets_of_the_report():
    files = result_files(paper_config())
    assert "eval/gen-ppl/data/OpenWebText.json" in files and "eval/diversity/data/OpenWebText.json" in files
    assert "eval/mauve/sedd-medium/gen-100-T128.json" in files and "eval/mauve/gpt2/top-k-50.json" in files
    assert "eval/zero-shot/gpt2-large/1BW.json" in files and "eval/lm-eval/gpt2-large.json" in files


def test_sampled_models_must_be_subjects():
    config = paper_config()
    config["mauve"]["models"] = ["gpt2", "gpt-2-small"]
    with pytest.raises(UserError, match="'mauve.models': gpt-2-small is not a subject"):
        result_files(config)
    config["mauve"]["models"] = ["gpt2"]
    assert "cannot  SEDD (128 steps) × MAUVE gen-1024: mauve.models does not list 'sedd-small'" in plan_text(plan(config))


def test_override_configs_merge_key_by_key(tmp_path):
    override = tmp_path / "small.yaml"
    override.write_text(yaml.safe_dump({"unconditional": {"num_samples": 2}, "mauve": {"steps": [128]}}))
    config = load_config([str(PAPER), str(override)])
    assert config["unconditional"]["num_samples"] == 2 and config["unconditional"]["length"] == 1024
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pysedd", "report", *args], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_cli_plan_and_bad_input(tmp_path):
    proc = _cli("--plan", "--configfile", "config/paper.yaml")
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "paper cells planned: 137/137"
    proc = _cli("--configfile", "config.yaml", "--results", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"pysedd: error: results directory {tmp_path / 'nope'} does not exist"
    proc = _cli("--plan", "--configfile", str(tmp_path / "none.yaml"))
    assert proc.returncode == 2 and proc.stderr.startswith("pysedd: error: cannot read config")


def test_diversity_with_window_50_reaches_the_report(tmp_path):
    """A schema-valid window other than 100 used to write a key the report did not look for (a silent '–'): the
    record carries the window as a value, and the repetition rate counts brute-force repeats within 50 tokens."""
    import numpy as np

    from pysedd.cli import main

    rng = np.random.default_rng(0)
    samples = rng.integers(0, 30, size=(3, 120))
    path = tmp_path / "s.npz"
    np.savez(path, samples=samples, meta=np.array(json.dumps({"model": "sedd", "steps": 8})))
    out = tmp_path / "d.json"
    assert main(["eval", "diversity", "--samples", str(path), "--window", "50", "--out", str(out)]) == 0
    entry = records.read_one(out, "diversity")
    assert entry.window == 50
    brute = [sum(x[i] in x[max(0, i - 50):i] for i in range(1, len(x))) / (len(x) - 1) for x in samples.tolist()]
    assert entry.repetition_literal.mean == pytest.approx(np.mean(brute)) and entry.ngram == 3


def _frontier_point(name, family, latency, gen_ppl, nfe=4):
    return records.FrontierPoint(name, family, "m", nfe, latency, gen_ppl, records.Stat(5.0, 0.1), 4, 64, 2, "cpu",
                                 "judge")


def test_frontier_section_from_a_frontier_record(tmp_path):
    """`pysedd report --frontier`: the frontier's record becomes the last section (table, latency as a multiple of
    the fastest GPT-2 point, plot); a frontier file without a valid record stops the report."""
    config = load_config([str(DEMO)])
    fake_results(tmp_path, config)
    points = [_frontier_point("T=8", "SEDD analytic", 0.5, 40.0, nfe=16), _frontier_point("T=4", "SEDD distilled",
              0.25, 42.0, nfe=8), _frontier_point("ancestral", "GPT-2", 0.2, 60.0),
              _frontier_point("top-p 0.95", "GPT-2", 0.4, 30.0)]
    _write(tmp_path, "bench/frontier.json", "frontier", points)
    out, tables_dir = tmp_path / "report.md", tmp_path / "tables"
    write_report(tmp_path, config, out, tables_dir, tmp_path / "bench/frontier.json")
    text = out.read_text()
    section = text[text.index("### Quality-latency frontier"):]
    assert text.rindex("### ") == text.index("### Quality-latency frontier")  # the last section
    # 2 calls per point (4 samples in batches of 2): NFE per batch halves the total; 0.5 s / 0.2 s = 2.50 x GPT-2
    assert "| SEDD analytic | T=8 | 8 | 500.00 | 2.50 | 40.00 | 5.000 ± 0.100 |" in section
    assert "| GPT-2 | ancestral | 2 | 200.00 | 1.00 | 60.00 |" in section
    assert "![quality-latency frontier](tables/frontier.png)" in section
    assert (tables_dir / "frontier.png").stat().st_size > 1000 and "<td>SEDD distilled</td>" in (tables_dir / "frontier.html").read_text()
    # the same numbers through the CLI; a frontier result whose record is malformed is one line naming the field
    bad = json.loads((tmp_path / "bench/frontier.json").read_text())
    del bad["record"]["entries"][2]["latency"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    record = tmp_path / "config.json"
    record.write_text(json.dumps(config))
    proc = _cli("--configfile", str(record), "--results", str(tmp_path), "--out", str(tmp_path / "r2.md"),
                "--frontier", str(tmp_path / "bad.json"))
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"pysedd: error: {tmp_path / 'bad.json'}: record.entries[2]: missing field 'latency'")
    assert not (tmp_path / "r2.md").exists()
