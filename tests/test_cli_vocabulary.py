"""One CLI vocabulary (docs/cli.md): every shell command the workflow renders for every shipped config parses with
`pysedd.cli.build_parser()` using only canonical flag names; deprecated spellings still parse, to the same values,
with one warning line; the workflow schema's defaults are pysedd/defaults.py's; `sample --temperature` works."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pysedd import defaults
from pysedd.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent
CONFIGS = ["config.yaml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "config").glob("*.yaml"))]


def parse(argv: list[str], capsys):
    """Parse as `pysedd` does; returns (namespace, stderr). A rejected command fails the test with its text."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"pysedd rejects: {shlex.join(argv)}\n{capsys.readouterr().err}")
    return args, capsys.readouterr().err


def rendered_commands(workdir: Path, configfile: str) -> list[str]:
    """`snakemake -n -p`'s shell commands: the text every rule would run, with `$(dirname X)` evaluated."""
    from test_workflow import make_local_inputs

    make_local_inputs(workdir)
    targets = ["all", "frontier"] if "distill" in yaml.safe_load((REPO / configfile).read_text()) else ["all"]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-n",
                           "-p", "--forceall", *targets, "--configfile", str(REPO / configfile)],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands, lines = [], proc.stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Shell command: "):  # one line, or a script on the lines after it up to a blank line
            block = [line.split("Shell command: ", 1)[1]]
            while not block[0] and i + 1 < len(lines) and lines[i + 1].strip():
                i += 1
                block.append(lines[i])
            script = re.sub(r"\\\n\s*", " ", "\n".join(block))
            commands += [c for c in script.splitlines() if re.search(r"(^|\s)(pysedd|-m pysedd)\s", c)]
    return [re.sub(r"\$\(dirname ([^)]+)\)", lambda m: os.path.dirname(m.group(1)), c) for c in commands]


def train_argv(kind: str, options: dict) -> list[str]:
    """train.smk's command for one model (a run: block, which a dry run does not print): `train --kind K` and the
    model's train options as flags, then the fixed flags of its template."""
    template = (REPO / "workflow/rules/train.smk").read_text()
    assert "train --kind {MODELS[wc.model]['kind']} {args}" in template
    argv = ["train", "--kind", kind]
    for key, value in sorted(options.items()):
        if key != "nproc":  # the launcher's process count, not a flag
            argv += [f"--{key.replace('_', '-')}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return argv + ["--data", "d", "--out", "o", "--supersede", "--no-progress"]


@pytest.mark.parametrize("configfile", CONFIGS)
def test_every_rendered_command_parses_with_canonical_flags(tmp_path, configfile, capsys):
    commands = rendered_commands(tmp_path, configfile)
    argvs = []
    for command in commands:
        words = shlex.split(command.split("&&")[0])
        ends = [i for i, w in enumerate(words) if w in (">", ">>", "||", "|")]
        words = words[: ends[0]] if ends else words
        argvs.append(words[words.index("pysedd") + 1:])
    config = yaml.safe_load((REPO / configfile).read_text())
    trained = [train_argv(m["kind"], m["train"]) for m in config["models"].values() if "train" in m]
    argvs += trained
    assert {a[0] for a in argvs} >= {"prepare", "sample", "eval", "bench", *(["train"] if trained else [])}, argvs
    for argv in argvs:
        _, err = parse(argv, capsys)
        assert "deprecated" not in err, f"{shlex.join(argv)} uses a deprecated spelling: {err}"


def test_paper_config_states_the_evaluation_protocol(tmp_path):
    """config/paper.yaml states the protocol settings the CLI would otherwise default silently, and each reaches its
    command as a flag: SEDD's lm-eval EOS framing (not GPT-2's: lm-eval's hf framing), MAUVE's text features of 100
    tokens, the 3-gram repetition column."""
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    assert config["lm_eval"]["options"]["eos_framing"] == "both"
    assert (config["mauve"]["features"], config["mauve"]["max_text_length"]) == ("text", 100)
    assert config["diversity"]["repetition_ngram"] == 3
    assert config["unconditional"]["sedd"]["categorical"] == config["mauve"]["categorical"] == "float64"
    commands = [shlex.split(c.split(" > ")[0]) for c in rendered_commands(tmp_path, "config/paper.yaml")]

    def flag(argv, name):
        return argv[argv.index(name) + 1] if name in argv else None

    lm_eval = [a for a in commands if a[a.index("pysedd") + 1:a.index("pysedd") + 3] == ["eval", "lm-eval"]]
    mauve = [a for a in commands if a[a.index("pysedd") + 1:a.index("pysedd") + 3] == ["eval", "mauve"]]
    diversity = [a for a in commands if a[a.index("pysedd") + 1:a.index("pysedd") + 3] == ["eval", "diversity"]]
    assert len(lm_eval) == 5 and len(mauve) == 22 and len(diversity) == 7
    assert {(flag(a, "--kind"), flag(a, "--eos-framing")) for a in lm_eval} == {("sedd", "both"), ("gpt2", None)}
    assert {(flag(a, "--features"), flag(a, "--max-text-length")) for a in mauve} == {("text", "100")}
    assert {flag(a, "--repetition-ngram") for a in diversity} == {"3"}


def test_protocol_defaults_are_the_clis(capsys):
    """The workflow's defaults of the protocol settings are the values the CLI takes when the flag is left out."""
    lm_eval, _ = parse(["eval", "lm-eval", "--model", "m", "--out", "o"], capsys)
    mauve, _ = parse(["eval", "mauve", "--prompts", "p", "--out", "o"], capsys)
    diversity, _ = parse(["eval", "diversity", "--out", "o"], capsys)
    assert lm_eval.eos_framing == defaults.WORKFLOW["lm_eval.options.eos_framing"] == "both"
    assert (mauve.features, mauve.max_text_length) == \
        (defaults.WORKFLOW["mauve.features"], defaults.WORKFLOW["mauve.max_text_length"]) == ("text", 100)
    assert diversity.repetition_ngram == defaults.WORKFLOW["diversity.repetition_ngram"] == 3


# (command, old argv, new argv): each old spelling of docs/cli.md's table and its canonical name
RENAMES = [
    (["train", "--out", "o"], ["--model", "gpt2"], ["--kind", "gpt2"]),
    (["prepare", "demo", "--out", "o"], ["--seq-len", "16"], ["--length", "16"]),
    (["eval", "zero-shot", "--model", "m", "--out", "o"], ["--seq-len", "16"], ["--length", "16"]),
    (["eval", "zero-shot", "--model", "m", "--out", "o"], ["--n-samples", "3"], ["--mc-samples", "3"]),
    (["eval", "lm-eval", "--model", "m", "--out", "o"], ["--n-samples", "3"], ["--mc-samples", "3"]),
    (["eval", "lm-eval", "--model", "m", "--out", "o"], ["--data-dir", "d"], ["--local-data", "d"]),
    (["eval", "diversity", "--out", "o"], ["--data", "d", "e"], ["--reference", "d", "e"]),
    (["eval", "mauve", "--model", "m", "--out", "o"], ["--references", "p"], ["--prompts", "p"]),
    (["eval", "mauve", "--prompts", "p", "--out", "o"], ["--n-prompts", "7"], ["--num-prompts", "7"]),
    (["eval", "mauve", "--prompts", "p", "--out", "o"], ["--seeds", "3", "4"], ["--mauve-seeds", "3", "4"]),
]


@pytest.mark.parametrize("base,old,new", RENAMES, ids=[f"{r[0][0]}{r[1][0]}" for r in RENAMES])
def test_deprecated_spelling_warns_once_and_means_the_same(base, old, new, capsys):
    args_new, err_new = parse(base + new, capsys)
    args_old, err_old = parse(base + old, capsys)
    assert vars(args_old) == vars(args_new)
    assert err_new == ""
    assert err_old == f"pysedd: warning: {old[0]} is deprecated; use {new[0]}\n"


def schema_node(schema: dict, dotted: str) -> dict:
    node = schema
    for key in dotted.split("."):
        node = node["properties"][key]
    return node


def test_shared_defaults_live_only_in_pysedd_defaults(tmp_path, capsys):
    """The schema states no default for a setting the CLI shares (pysedd/defaults.py's WORKFLOW is the one place);
    the workflow's resolved config and the CLI's flags both take the module's values."""
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    for dotted in defaults.WORKFLOW:
        assert "default" not in schema_node(schema, dotted), dotted
    # a config that sets none of them resolves to the module's values (results/config.json: the resolved config)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"models": {"g": {"kind": "gpt2", "hub": "gpt2"},
                                                             "s": {"kind": "sedd", "hub": "louaaron/sedd-small"}},
                                                  "judge": "g"}))
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores",
                    "1", "config_record", "--configfile", str(tmp_path / "c.yaml")], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    resolved = json.loads((tmp_path / "results" / "config.json").read_text())
    for dotted, value in defaults.WORKFLOW.items():
        node = resolved
        for key in dotted.split("."):
            node = node[key]
        assert node == value, dotted
    # and the CLI's own defaults are the module's (the flags the workflow omits take these)
    sample, _ = parse(["sample", "--model", "m", "--out", "o"], capsys)
    assert (sample.num_samples, sample.length, sample.steps) == (1024, 1024, 1024)
    mauve, _ = parse(["eval", "mauve", "--prompts", "p", "--out", "o"], capsys)
    assert (mauve.num_prompts, mauve.steps, mauve.mauve_seeds) == (1000, 1024, [1, 2, 3, 4, 5])
    zero_shot, _ = parse(["eval", "zero-shot", "--model", "m", "--out", "o"], capsys)
    assert (zero_shot.mc_samples, zero_shot.batch_size) == (128, 8)
    from pysedd.commands.bench import resolve

    latency, _ = parse(["bench", "latency", "--out", "o"], capsys)
    assert {k: resolve(latency)[k] for k in ("length", "batch_size", "repeats", "steps", "fhs")} == \
        {"length": 1024, "batch_size": 1, "repeats": 20, "steps": [64, 128, 256, 512, 1024], "fhs": False}


def test_sample_temperature_reaches_gpt2(tmp_path):
    """A temperature near 0 turns ancestral sampling into greedy decoding: every row equals the greedy row; at
    temperature 1 the rows differ. The temperature is recorded in the .npz meta."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=19,
                               eos_token_id=19)).save_pretrained(tmp_path / "gpt2")
    rows = {}
    for temperature in ("1e-6", "1"):
        out = tmp_path / f"t{temperature}.npz"
        assert main(["sample", "--model", str(tmp_path / "gpt2"), "--num-samples", "4", "--length", "12",
                     "--temperature", temperature, "--device", "cpu", "--out", str(out)]) == 0
        with np.load(out) as z:
            rows[temperature] = z["samples"]
            assert '"temperature": ' + str(float(temperature)) in str(z["meta"])
    from pysedd.ar import ar_sample
    from pysedd.loader import load

    greedy = ar_sample(load(str(tmp_path / "gpt2"), "gpt2", torch.device("cpu")).model, 1, 12, greedy=True).samples
    assert (rows["1e-6"] == greedy.numpy()).all()
    assert len({tuple(r) for r in rows["1"]}) > 1
    assert main(["sample", "--model", str(tmp_path / "gpt2"), "--temperature", "0", "--out", str(tmp_path / "x.npz")]) == 2
