"""The Snakemake workflow: DAGs of every config, rerun rules, config errors, and the report's tables.

Dry runs only (`snakemake -n`, ~2 s each): a "finished" run is simulated by creating every output the DAG lists and
recording it with `snakemake --touch`, which stores the same provenance (params, code) as a real run, so the
rerun triggers can be checked after edits without running any stage. The demo DAG itself runs in CI (.ci/).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("snakemake")

REPO = Path(__file__).resolve().parents[1]
FILE_SUFFIXES = (".json", ".md", ".tsv", ".npz", ".png", ".jsonl", ".html")


def snakemake(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile", check: bool = True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile") -> dict[str, int]:
    """{rule: job count} of what a dry run would execute ({} when there is nothing to do)."""
    out = snakemake(workdir, "-n", "--quiet", "rules", *args, snakefile=snakefile).stdout
    if "Nothing to be done" in out:
        return {}
    jobs, in_table = {}, False
    for line in out.splitlines():
        if line.startswith("job "):
            in_table = True
        elif in_table and line.strip() and not line.startswith("---"):
            name, count = line.split()
            if name == "total":
                break
            jobs[name] = int(count)
    return jobs


def write_config(path: Path, edit) -> Path:
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("configfile, expected", [
    ("config.yaml", {"prepare_train": 1, "train": 3, "export": 3, "sample": 4, "gen_ppl": 4, "diversity": 4,
                     "zero_shot": 2, "lm_eval": 2, "mauve": 3, "latency": 1, "report": 1}),
    ("config/paper.yaml", {"prepare_eval": 5, "zero_shot": 25, "lm_eval": 5, "sample": 6, "gen_ppl": 6,
                           "diversity": 6, "sample_conditional": 22, "mauve": 22, "prepare_real_text": 1, "gen_ppl_real": 1,
                           "diversity_data": 1, "latency": 1, "report": 1}),
    ("config/retrain-owt.yaml", {"prepare_train": 1, "train": 2, "export": 2, "zero_shot": 12, "sample": 5}),
])
def test_dry_run_of_every_config(tmp_path, configfile, expected):
    for name in ("webtext.test.jsonl", "openwebtext.txt", "ptb.test.txt", "lm1b.test.txt"):  # local inputs
        (tmp_path / "resources").mkdir(exist_ok=True)
        (tmp_path / "resources" / name).touch()
    jobs = planned_jobs(tmp_path, "--configfile", str(REPO / configfile))
    for rule, count in expected.items():
        assert jobs.get(rule) == count, (rule, jobs)
    if configfile == "config/paper.yaml":  # pretrained by hub id: no training, no tokenisation of OpenWebText
        assert "train" not in jobs and "prepare_train" not in jobs


@pytest.mark.parametrize("edit, key", [
    (lambda c: c.update(unknown_key=1), "unknown_key"),
    (lambda c: c["unconditional"].update(num_samples="many"), "num_samples"),
    (lambda c: c["unconditional"]["sedd"].update(steps=[0, 16]), "steps"),
    (lambda c: c["zero_shot"]["datasets"].update(mine={"corpus": "wikitext4"}), "corpus"),
    (lambda c: c["models"]["sedd"]["train"].update(steps=0), "steps"),
    (lambda c: c["lm_eval"].update(tasks=["hellaswag", "not_a_task"]), "tasks"),
    (lambda c: c["models"]["sedd"].update(hub="louaaron/sedd-small"), "sedd"),  # both hub and train
])
def test_config_error_names_the_key(edit, key):
    """The schema check the workflow runs first (snakemake.utils.validate on the schema), called directly."""
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    edit(config)
    with pytest.raises(WorkflowError) as info:
        validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert "Error validating config file" in str(info.value) and key in str(info.value), str(info.value)


def test_config_error_stops_the_run_before_any_job(tmp_path):
    configfile = write_config(tmp_path / "bad.yaml", lambda c: c["unconditional"]["sedd"].update(steps=[0]))
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(configfile), check=False)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error validating config file" in message and "['unconditional']['sedd']['steps'][0]" in message, message
    assert not (tmp_path / "results").exists()


def finish_everything(workdir: Path, snakefile: Path, *args: str) -> None:
    """Make the DAG look fully run: create every output it lists, then record provenance with --touch."""
    summary = snakemake(workdir, "--summary", *args, snakefile=snakefile).stdout.splitlines()
    for line in summary[1:]:
        path = workdir / line.split("\t")[0]
        if path.suffix in FILE_SUFFIXES:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
        else:  # directory() outputs: exported models, lm-eval task data
            path.mkdir(parents=True, exist_ok=True)
    snakemake(workdir, "--touch", "--forceall", "--cores", "1", *args, snakefile=snakefile)


@pytest.fixture(scope="module")
def finished_copy(tmp_path_factory):
    """A copy of the repository (so its pysedd sources can be edited) whose demo DAG looks finished."""
    root = tmp_path_factory.mktemp("repo")
    for name in ("Snakefile", "config.yaml", "profiles"):
        src = REPO / name
        if src.is_symlink():
            (root / name).symlink_to(src.readlink())
        else:
            shutil.copy(src, root / name)
    for name in ("workflow", "pysedd", "config"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    finish_everything(root, root / "Snakefile")
    return root


def test_rerun_only_what_changed(finished_copy, tmp_path):
    root, snakefile = finished_copy, finished_copy / "Snakefile"
    # a no-op rerun does nothing
    assert planned_jobs(root, snakefile=snakefile) == {}

    # a sampling setting: sampling and what depends on it, never tokenisation or training
    def more_steps(c):
        c["unconditional"]["sedd"]["steps"] = [16, 32, 64]
        c["unconditional"]["seed"] = 7

    jobs = planned_jobs(root, "--configfile", str(write_config(tmp_path / "s.yaml", more_steps)), snakefile=snakefile)
    assert jobs["sample"] == 5 and jobs["gen_ppl"] == 5 and jobs["diversity"] == 5 and jobs["report"] == 1
    for rule in ("prepare_train", "train", "export", "zero_shot", "lm_eval", "latency", "sample_conditional"):
        assert rule not in jobs, jobs

    # a training setting of one model: that model and its dependants only
    jobs = planned_jobs(root, "--configfile",
                        str(write_config(tmp_path / "t.yaml", lambda c: c["models"]["gpt2"]["train"].update(lr=5e-4))),
                        snakefile=snakefile)
    assert jobs["train"] == 1 and jobs["export"] == 1 and "prepare_train" not in jobs
    assert jobs["sample"] == 2  # gpt2 ancestral + nucleus, not SEDD's

    # the code of one stage family: editing the sampler reruns sampling (and dependants), not training or data
    sampler = root / "pysedd" / "sampling" / "pc.py"
    original = sampler.read_text()
    try:
        sampler.write_text(original + "\n# edited\n")
        jobs = planned_jobs(root, snakefile=snakefile)
        assert jobs["sample"] == 4 and jobs["sample_conditional"] == 3
        for rule in ("prepare_train", "train", "export", "zero_shot", "lm_eval", "heldout_tasks", "prompts"):
            assert rule not in jobs, jobs
    finally:
        sampler.write_text(original)
    assert planned_jobs(root, snakefile=snakefile) == {}

    # the report's own code reruns only the report
    report = root / "pysedd" / "report.py"
    original = report.read_text()
    try:
        report.write_text(original + "\n# edited\n")
        assert planned_jobs(root, snakefile=snakefile) == {"report": 1, "all": 1}
    finally:
        report.write_text(original)
