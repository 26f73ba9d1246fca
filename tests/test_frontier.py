"""`pysedd bench frontier` end to end on tiny random models: every sampler family, the students' step counts read from
their exports, latency and judge perplexity per point, JSON + markdown + HTML + PNG."""
import json

import pytest

from pysedd.cli import main
from pysedd.results import read_entries


@pytest.fixture
def student(tmp_path):
    import torch

    from pysedd.config import SEDDConfig
    from pysedd.model import SEDD

    torch.manual_seed(0)
    path = tmp_path / "student"
    SEDD(SEDDConfig.preset("tiny")).save_pretrained(path)
    (path / "distill.json").write_text(json.dumps({"student_steps": 2}))
    return path


def test_frontier_writes_every_family(tmp_path, student):
    out = tmp_path / "frontier.json"
    argv = ["bench", "frontier", "--sedd", "tiny", "--students", str(student), f"{student}:3", "--gpt2", "tiny",
            "--judge", "tiny", "--steps", "2", "4", "--fhs-k", "1", "8", "--num-samples", "3", "--batch-size", "2",
            "--length", "16", "--device", "cpu", "--out", str(out), "--table", str(tmp_path / "f.md"),
            "--html", str(tmp_path / "f.html"), "--plot", str(tmp_path / "f.png"), "--categorical", "reference"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["categorical"] == "reference"
    rows = {(r["family"], r["sampler"]): r for r in result["results"]}
    assert set(rows) == {("SEDD analytic", "T=2"), ("SEDD analytic", "T=4"), ("SEDD first-hitting", "exact"),
                         ("SEDD first-hitting", "k=8"), ("SEDD distilled", "T=2"), ("SEDD distilled", "T=3"),
                         ("GPT-2", "ancestral"), ("GPT-2", "top-p 0.95")}
    # network calls: 2 batches (2 + 1 samples); exact FHS = L per batch, k = 8 -> L / 8 per batch
    assert rows[("SEDD first-hitting", "exact")]["nfe"] == 2 * 16
    assert rows[("SEDD first-hitting", "k=8")]["nfe"] == 2 * 2
    assert rows[("SEDD distilled", "T=3")]["nfe"] <= 2 * (3 + 1)
    for r in rows.values():
        assert r["latency_per_sample"] > 0 and r["gen_ppl"] > 1 and 0 < r["entropy"] <= 2.78  # log(16)
    assert min(r["latency_vs_gpt2"] for r in rows.values() if r["family"] == "GPT-2") == 1.0
    points = {(p.family, p.name): p for p in read_entries(out, "frontier")}  # what the report reads
    assert set(points) == set(rows) and points[("SEDD first-hitting", "k=8")].nfe == 2 * 2
    assert "data:image/png;base64," in (tmp_path / "f.html").read_text()
    assert "![quality-latency frontier](f.png)" in (tmp_path / "f.md").read_text()


def test_frontier_bad_inputs(tmp_path, capsys):
    base = ["bench", "frontier", "--sedd", "tiny", "--judge", "tiny", "--out", str(tmp_path / "x.json")]
    for extra, text in ((["--students", str(tmp_path)], "distill.json"), (["--num-samples", "0"], "num-samples"),
                        (["--top-p", "1.5"], "top-p")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("pysedd: error:") and len(err.splitlines()) == 1 and text in err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("configfile, expected, in_report", [
    ("config.yaml", {"train": 3, "distill": 1, "frontier": 1}, False),
    ("config/paper.yaml", {"prepare_distill": 1, "distill": 1, "frontier": 1}, True),
])
def test_workflow_target_frontier(tmp_path, configfile, expected, in_report):
    """`snakemake frontier` plans the teacher/baseline/judge (trained or by hub id), one distillation job and the
    frontier; the paper config tokenises its own distillation corpus and trains nothing. With `frontier.in_report`
    (the paper config) the frontier is part of `all`, as the report's last section; without (the demo) it is not."""
    pytest.importorskip("snakemake")
    from test_workflow import REPO, make_local_inputs, planned_jobs

    make_local_inputs(tmp_path)
    jobs = planned_jobs(tmp_path, "--configfile", str(REPO / configfile), "--", "frontier")
    assert {rule: jobs.get(rule) for rule in expected} == expected
    assert ("frontier" in planned_jobs(tmp_path, "--configfile", str(REPO / configfile))) == in_report
