"""The Snakemake workflow: DAGs of every config, rerun rules, config errors, and the report's tables.

Dry runs only (`snakemake -n`, ~2 s each): a "finished" run is simulated by creating every output the DAG lists and
recording it with `snakemake --touch`, which stores the same provenance (params, code) as a real run, so the
rerun triggers can be checked after edits without running any stage. The demo DAG itself runs in CI (.ci/).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
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


def make_local_inputs(workdir: Path) -> None:
    """Stand-ins for the local files the shipped configs name (paper.yaml's WebText prompts and corpora), which the
    workflow checks for before any job starts."""
    (workdir / "resources").mkdir(exist_ok=True)
    for name in ("webtext.test.jsonl", "openwebtext.txt", "openwebtext-train.txt", "ptb.test.txt", "lm1b.test.txt"):
        (workdir / "resources" / name).write_text('{"text": "x"}\n')


def write_config(path: Path, edit) -> Path:
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("configfile, expected", [
    ("config.yaml", {"prepare_train": 1, "train": 3, "sample": 4, "gen_ppl": 4, "diversity": 4,
                     "zero_shot": 2, "lm_eval": 2, "mauve": 3, "latency": 1, "report": 1}),
    ("config/paper.yaml", {"prepare_eval": 5, "zero_shot": 25, "lm_eval": 5, "sample": 6, "gen_ppl": 6,
                           "diversity": 6, "sample_conditional": 22, "mauve": 22, "prepare_real_text": 1,
                           "gen_ppl_real": 1, "diversity_data": 1, "latency": 1, "report": 1}),
    ("config/retrain-owt.yaml", {"prepare_train": 1, "train": 2, "zero_shot": 12, "sample": 5}),
])
def test_dry_run_of_every_config(tmp_path, configfile, expected):
    make_local_inputs(tmp_path)
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
    for name in ("workflow", "pysedd", "config", "csrc"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    finish_everything(root, root / "Snakefile")
    return root


def edited(path: Path, old: str, new: str):
    """A context manager that replaces `old` by `new` in a source file (which must contain it) and restores it."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        original = path.read_text()
        assert old in original, (path, old)
        path.write_text(original.replace(old, new, 1))
        try:
            yield
        finally:
            path.write_text(original)

    return cm()


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
    for rule in ("prepare_train", "train", "zero_shot", "lm_eval", "latency", "sample_conditional"):
        assert rule not in jobs, jobs

    # a training setting of one model: that model and its dependants only
    jobs = planned_jobs(root, "--configfile",
                        str(write_config(tmp_path / "t.yaml", lambda c: c["models"]["gpt2"]["train"].update(lr=5e-4))),
                        snakefile=snakefile)
    assert jobs["train"] == 1 and "prepare_train" not in jobs
    assert jobs["sample"] == 2  # gpt2 ancestral + nucleus, not SEDD's

    # logging, checkpoint and eval cadence and the process count never retrain
    def cadence(c):
        c["models"]["sedd"]["train"].update(log_every=1, ckpt_every=7, eval_every=5, nproc=2)

    assert planned_jobs(root, "--configfile", str(write_config(tmp_path / "c.yaml", cadence)),
                        snakefile=snakefile) == {}


# what any change of the resolved config reruns besides the jobs it reaches: its record and the report
RECORD = {"config_record": 1, "report": 1, "all": 1}


@pytest.mark.parametrize("edit, expected", [
    # stating the defaults (pysedd/defaults.py) explicitly, as config/paper.yaml does, changes nothing
    (lambda c: (c["lm_eval"]["options"].update(eos_framing="both"), c["diversity"].update(repetition_ngram=3),
                c["mauve"].update(features="text", max_text_length=100)), {}),
    # lm-eval's EOS framing is SEDD's only: SEDD's lm-eval job, not GPT-2's
    (lambda c: c["lm_eval"]["options"].update(eos_framing="none"), {**RECORD, "lm_eval": 1}),
    # the repetition n-gram: the diversity of every sample set and of the real-text row, never the samples
    (lambda c: c["diversity"].update(repetition_ngram=2), {**RECORD, "diversity": 4, "diversity_data": 1}),
    # MAUVE's features: MAUVE only, never the prompted samples
    (lambda c: c["mauve"].update(features="ids"), {**RECORD, "mauve": 3}),
    (lambda c: c["mauve"].update(max_text_length=50), {**RECORD, "mauve": 3}),
], ids=["defaults-stated", "eos_framing", "repetition_ngram", "features", "max_text_length"])
def test_protocol_settings_rerun_only_their_evaluation(finished_copy, tmp_path, edit, expected):
    configfile = write_config(tmp_path / "p.yaml", edit)
    assert planned_jobs(finished_copy, "--configfile", str(configfile),
                        snakefile=finished_copy / "Snakefile") == expected


@pytest.mark.parametrize("path, old, new, expected", [
    # comments and docstrings never count, wherever they are
    ("pysedd/hub.py", '"""', '"""An edited docstring. ', {}),
    ("pysedd/model.py", "\nimport", "\n# a comment\nimport", {}),
    # training code is not hashed: the trainer itself decides whether its checkpoints still apply
    ("pysedd/train/trainer.py", "def train(", "def _unused():\n    return 1\n\n\ndef train(", {}),
    # the sampler: sampling and its dependants, never data, training or the other evaluations
    ("pysedd/sampling/pc.py", "\nimport", "\nSENTINEL = 1\nimport",
     {"sample": 4, "sample_conditional": 3, "gen_ppl": 4, "diversity": 4, "mauve": 3, "latency": 1, "report": 1,
      "lm_eval": 2, "all": 1}),  # lm-eval's generation requests sample too
    # MAUVE's module: MAUVE only (not zero-shot, lm-eval, gen-PPL)
    ("pysedd/eval/mauve_eval.py", "\nimport", "\nSENTINEL = 1\nimport", {"mauve": 3, "report": 1, "all": 1}),
    # training-only kernels glue: nothing runs it but training
    ("pysedd/ops/fused.py", "\nimport", "\nSENTINEL = 1\nimport", {}),
    # the compiled kernels' sources: everything that loads the extension
    # (zero-shot too: SEDD's ELBO goes through the score-entropy kernel)
    ("csrc/ops_registration.cpp", "\n", "\nstatic int sentinel = 1;\n",
     {"sample": 4, "sample_conditional": 3, "gen_ppl": 4, "diversity": 4, "diversity_data": 1, "mauve": 3,
      "latency": 1, "report": 1, "zero_shot": 2, "lm_eval": 2, "all": 1}),
    # the one model loader: every stage that loads a network (not data, training or the report's own code)
    ("pysedd/loader.py", "def _load_sedd(location: Location, revision: str | None) -> LoadedModel:\n",
     "def _load_sedd(location: Location, revision: str | None) -> LoadedModel:\n    SENTINEL = 1\n",
     {"sample": 4, "sample_conditional": 3, "gen_ppl": 4, "diversity": 4, "diversity_data": 1, "mauve": 3,
      "zero_shot": 2, "lm_eval": 2, "latency": 1, "report": 1, "all": 1}),
    # the report's own code reruns only the report
    ("pysedd/report.py", "\nimport", "\nSENTINEL = 1\nimport", {"report": 1, "all": 1}),
])
def test_code_edits_rerun_what_imports_them(finished_copy, path, old, new, expected):
    with edited(finished_copy / path, old, new):
        assert planned_jobs(finished_copy, snakefile=finished_copy / "Snakefile") == expected


def test_deleted_results_are_regenerated_with_their_dependants(finished_copy):
    """A deleted intermediate (samples, an eval JSON, an exported model as a failed or interrupted retrain leaves
    it) comes back, with everything made from it; the report is rebuilt."""
    root, snakefile = finished_copy, finished_copy / "Snakefile"
    cases = [
        ("results/samples/sedd/T16.npz", {"sample": 1, "gen_ppl": 1, "diversity": 1, "report": 1, "all": 1}),
        ("results/eval/zero-shot/gpt2/demo-heldout.json", {"zero_shot": 1, "report": 1, "all": 1}),
        ("results/models/gpt2/model", {"train": 1, "sample": 2, "sample_conditional": 1, "gen_ppl": 2,
                                       "diversity": 2, "mauve": 1, "zero_shot": 1, "lm_eval": 1, "latency": 1,
                                       "report": 1, "all": 1}),
    ]
    for name, expected in cases:
        path = root / name
        backup = path.with_name(path.name + ".bak")
        path.rename(backup)
        try:
            assert planned_jobs(root, snakefile=snakefile) == expected, name
        finally:
            backup.rename(path)
    assert planned_jobs(root, snakefile=snakefile) == {}


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["zero_shot"]["datasets"].update(mine={"corpus": "local", "path": ["nope/test.txt"]}),
     "zero_shot.datasets.mine.path"),
    (lambda c: c["models"].update(extra={"kind": "gpt2", "hub": "./no/such/model"}), "models.extra.hub"),
    (lambda c: c["latency"].update(sedd="sedd-nonexistent"), "latency.sedd"),
    (lambda c: c["mauve"].update(canvases=[64], prompt_len=50, gen_len=50), "mauve.canvases"),
    (lambda c: c["unconditional"].update(length=256), "unconditional.length"),
    (lambda c: c["models"]["sedd"]["train"].update(batch_size=6, micro_batch_size=4), "micro_batch_size"),
    (lambda c: c["mauve"]["prompts"].update(source="file", path="resources/webtext.test.jsonl"),
     "mauve.prompts.path"),
])
def test_job_time_failures_stop_before_any_job(tmp_path, edit, key):
    """Configs that pass the schema but would fail inside a job are refused at parse time, naming the key."""
    configfile = write_config(tmp_path / "bad.yaml", edit)
    proc = snakemake(tmp_path, "-n", "--configfile", str(configfile), check=False)
    assert proc.returncode != 0
    assert f"config key '{key}" in proc.stdout + proc.stderr or f".{key}'" in proc.stdout + proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists()


def test_slurm_profile_refuses_placeholders(tmp_path):
    proc = snakemake(tmp_path, "--workflow-profile", str(REPO / "workflow/profiles/slurm"), check=False)
    assert proc.returncode != 0 and "is still SET-ME" in proc.stdout + proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_html_report_shows_tables_in_a_browser(finished_copy, tmp_path):
    """`snakemake --report`: each table is an HTML page the report viewer shows inline (not a TSV download), checked
    in headless Chromium: the report renders (non-blank screenshot) and the table page's DOM holds the numbers."""
    import base64
    import re

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    root = finished_copy
    from pysedd.report import Rendered

    table = root / "results/report/table1.html"
    original = table.read_text()
    table.write_text(Rendered("table1", "Table 1: zero-shot perplexity", "caption", ["model", "PTB"],
                              [["sedd", "≤41.84"], ["gpt2", "42.43"]]).html())
    try:
        snakemake(root, "--report", str(tmp_path / "report.html"), snakefile=root / "Snakefile")
    finally:
        table.write_text(original)
    page = (tmp_path / "report.html").read_text()
    uri = re.search(r'data:text/html;charset=utf8;filename=table1\.html;base64,([A-Za-z0-9+/=]+)', page)
    assert uri, "the table is not embedded as an HTML page"
    (tmp_path / "table1.html").write_bytes(base64.b64decode(uri.group(1)))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", str(tmp_path / "table1.html")], capture_output=True,
                         text=True, timeout=120).stdout
    assert "<td>≤41.84</td>" in dom and "<td>42.43</td>" in dom, dom[:2000]
    assert "Table 1" in subprocess.run([chromium, *flags, "--virtual-time-budget=5000", "--dump-dom",
                                        str(tmp_path / "report.html")], capture_output=True, text=True,
                                       timeout=120).stdout
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *flags, "--virtual-time-budget=5000", f"--screenshot={shot}", "--window-size=1200,900",
                    str(tmp_path / "report.html")], capture_output=True, timeout=120)
    from PIL import Image

    pixels = Image.open(shot).convert("L").getextrema()
    assert pixels[0] < pixels[1] - 50, f"blank screenshot {pixels}"


def test_prepare_offline_names_what_is_missing(tmp_path):
    """The login-node preparation's offline check (the hub is off in tests): the demo needs nothing; a config with
    an uncached hub model and a missing prompt file is refused, naming both."""
    script = REPO / "workflow" / "scripts" / "prepare_offline.py"
    ok = subprocess.run([sys.executable, str(script), str(REPO / "config.yaml"), "--verify"], capture_output=True,
                        text=True, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0 and "OK offline: 0 models, 0 corpora, 0 lm-eval tasks, 0 files" in ok.stdout, ok.stderr

    def needs_network(c):
        c["models"]["extra"] = {"kind": "gpt2", "hub": "pysedd-test/not-cached"}
        c["mauve"]["prompts"] = {"source": "file", "path": "resources/webtext.test.jsonl", "num_prompts": 4}

    bad = subprocess.run([sys.executable, str(script), str(write_config(tmp_path / "c.yaml", needs_network)),
                          "--verify"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 1
    assert "model pysedd-test/not-cached" in bad.stderr and "file resources/webtext.test.jsonl" in bad.stderr, bad.stderr
    # the paper config's local corpus files (no source to fetch them from) are named too
    paper = subprocess.run([sys.executable, str(script), str(REPO / "config" / "paper.yaml"), "--verify"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert paper.returncode == 1
    for path in ("ptb.test.txt", "lm1b.test.txt", "openwebtext.txt", "openwebtext-train.txt"):
        assert f"file resources/{path}" in paper.stderr, paper.stderr


def test_a_replaced_local_corpus_file_reruns_its_tokenisation(finished_copy, tmp_path):
    """Local corpus files are inputs of the rule that tokenises them: a newer file reruns that rule and its
    dependants, an untouched one nothing."""
    corpus = tmp_path / "ptb.test.txt"
    corpus.write_text("the cat sat on the mat .\n" * 50)
    config = write_config(tmp_path / "local.yaml", lambda c: c["zero_shot"]["datasets"].update(
        local={"corpus": "ptb", "path": [str(corpus)]}))
    root = tmp_path / "repo"
    shutil.copytree(finished_copy, root, symlinks=True)
    finish_everything(root, root / "Snakefile", "--configfile", str(config))
    assert planned_jobs(root, "--configfile", str(config), snakefile=root / "Snakefile") == {}
    corpus.write_text("a new corpus .\n" * 50)
    later = time.time() + 10
    os.utime(corpus, (later, later))
    jobs = planned_jobs(root, "--configfile", str(config), snakefile=root / "Snakefile")
    assert jobs.get("prepare_eval") == 1 and jobs.get("zero_shot") == 2 and "prepare_train" not in jobs, jobs


def test_gpt2_hub_results_record_the_resolved_commit(tmp_path):
    """A GPT-2 given by hub id records the snapshot commit it was loaded from (an offline HF cache built here, a tiny
    GPT-2 saved under a hub id in the cache layout), as SEDD models do."""
    code = r"""
import json, os, sys
from pathlib import Path
from transformers import GPT2Config, GPT2LMHeadModel
commit = "0123456789abcdef0123456789abcdef01234567"
repo = Path(os.environ["HF_HUB_CACHE"]) / "models--pysedd-test--tiny-gpt2"
snap = repo / "snapshots" / commit
GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32, vocab_size=50257)).save_pretrained(snap)
(repo / "refs").mkdir(parents=True)
(repo / "refs" / "main").write_text(commit)
from pysedd.eval.common import load_model
print(json.dumps(load_model("pysedd-test/tiny-gpt2", kind="gpt2").fingerprint))
"""
    env = {**__import__("os").environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fingerprint = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fingerprint["commit"] == "0123456789abcdef0123456789abcdef01234567", fingerprint
