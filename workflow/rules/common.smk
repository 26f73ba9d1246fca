"""Shared helpers: config validation, code fingerprints per stage family, model paths and CLI flag rendering.

Every rule passes its settings through `params:` (whole sub-dicts of the config) plus `code=CODE[<family>]`, a sha256
of the pysedd sources that stage runs, because Snakemake's code trigger only sees the shell template, not imported code.
"""
import hashlib
import json
import shlex
from pathlib import Path

from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

REPO = Path(workflow.basedir)
PKG = REPO / "pysedd"
RESULTS = config["results_dir"]
PYSEDD = config["pysedd"]  # the command that runs pysedd, e.g. "pysedd" or "python -m pysedd"

# The pysedd sources each stage family runs (globs; modules that do not exist yet are skipped). CORE is the model
# maths every stage that runs a network depends on.
CORE = ["config.py", "model.py", "graph.py", "noise.py", "hub.py", "ops/**/*.py", "csrc/**/*"]
FAMILY_SOURCES = {
    "data": ["tokenizer.py", "data/**/*.py", "commands/prepare.py"],
    "train": CORE + ["losses.py", "ar.py", "train/**/*.py", "commands/train.py"],
    "sample": CORE + ["ar.py", "sampling/**/*.py", "commands/sample.py"],
    "eval": CORE + ["ar.py", "likelihood.py", "tokenizer.py", "eval/**/*.py", "commands/eval*.py"],
    "bench": CORE + ["ar.py", "sampling/**/*.py", "bench/**/*.py", "commands/bench*.py"],
    "report": ["report.py", "commands/report.py"],
}


def source_hash(patterns):
    """sha256 over the (relative path, content) of every file the patterns match, in sorted order."""
    digest = hashlib.sha256()
    files = sorted({p for pattern in patterns for p in PKG.glob(pattern) if p.is_file() and "__pycache__" not in p.parts})
    for path in files:
        digest.update(str(path.relative_to(PKG)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


CODE = {family: source_hash(patterns) for family, patterns in FAMILY_SOURCES.items()}


def canon(value):
    """A dict with its keys sorted at every level, so reordering keys in the config never looks like a change."""
    if isinstance(value, dict):
        return {k: canon(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canon(v) for v in value]
    return value


def flags(options):
    """Render a dict as CLI flags in sorted key order: {"steps": [1, 2], "ema": True} -> '--ema --steps 1 2'."""
    parts = []
    for key, value in sorted(options.items()):
        flag = "--" + key.replace("_", "-")
        if value is None or value is False or value == []:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts.append(flag + " " + " ".join(shlex.quote(str(v)) for v in value))
        else:
            parts.append(flag + " " + shlex.quote(str(value)))
    return " ".join(parts)


def fingerprint(*objects):
    """A short, stable hash of JSON-serialisable settings (used to tell a resume from a changed run)."""
    return hashlib.sha256(json.dumps(objects, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- models


MODELS = config["models"]


def models_of(kind, role=None):
    """Names of the configured models of one kind ('sedd' or 'gpt2'), in config order; role filters judge/subjects."""
    return [name for name, m in MODELS.items() if m["kind"] == kind and (role is None or m["role"] == role)]


SUBJECTS = [name for name, m in MODELS.items() if m["role"] == "subject"]
JUDGE = config["judge"]
if JUDGE not in MODELS or MODELS[JUDGE]["kind"] != "gpt2":
    raise ValueError(f"config key 'judge': {JUDGE!r} must name a gpt2 model under 'models'")


def model_path(name):
    """What a stage passes as --model: the exported directory of a trained model, or the hub id / local path."""
    m = MODELS[name]
    return m["hub"] if "hub" in m else f"{RESULTS}/models/{name}/model"


def model_input(name):
    """The file dependency of a model: its export when trained here, nothing when it comes from the hub."""
    return [f"{RESULTS}/models/{name}/model"] if "train" in MODELS[name] else []


def trained_models():
    return [name for name, m in MODELS.items() if "train" in m]


# ---------------------------------------------------------------- sampling settings


def unconditional_settings(name):
    """Sampling setting labels of a model: 'T<steps>' for SEDD, the configured names for GPT-2."""
    unc = config["unconditional"]
    if MODELS[name]["kind"] == "sedd":
        return [f"T{steps}" for steps in unc["sedd"]["steps"]]
    return list(unc["gpt2"])


def sampling_options(name, setting):
    """The full option dict of one sampling job (common settings + model-kind specific ones)."""
    unc = config["unconditional"]
    common = {k: unc[k] for k in ("num_samples", "length", "batch_size", "seed")}
    if MODELS[name]["kind"] == "sedd":
        return {**common, "sampler": unc["sedd"]["sampler"], "steps": int(setting[1:])}
    return {**common, **unc["gpt2"][setting]}


def all_samples():
    return [f"{RESULTS}/samples/{name}/{setting}.npz" for name in SUBJECTS for setting in unconditional_settings(name)]


def conditional_settings(name):
    """MAUVE generation settings: the canvases for SEDD (gen-100/gen-1024), one causal setting for GPT-2."""
    mauve = config["mauve"]
    if MODELS[name]["kind"] == "sedd":
        return [f"gen-{canvas}" for canvas in mauve["canvases"]]
    return ["gen"]


def final_targets():
    """Everything `rule all` builds: the report plus the artefacts it summarises."""
    return [f"{RESULTS}/report.md"]
