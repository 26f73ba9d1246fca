"""Shared helpers: config validation, code fingerprints per stage family, model paths and CLI flag rendering.

Every rule passes its settings through `params:` (whole sub-dicts of the config) plus `code=CODE[<family>]`, a sha256
of the pysedd sources that stage runs, because Snakemake's code trigger only sees the shell template, not imported code.
"""
import hashlib
import json
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

REPO = Path(workflow.basedir)
PKG = REPO / "pysedd"
RESULTS = config["results_dir"]
PYSEDD = config["pysedd"]  # the command that runs pysedd, e.g. "pysedd" or "python -m pysedd"

sys.path.insert(0, str(REPO))  # this checkout's pysedd: the report's plan names the result files the rules write
import pysedd.report as paper_plan  # noqa: E402

# The pysedd sources each stage family runs (globs; modules that do not exist yet are skipped). CORE is the model
# maths every stage that runs a network depends on.
CORE = ["config.py", "model.py", "graph.py", "noise.py", "hub.py", "ops/**/*.py", "csrc/**/*"]
FAMILY_SOURCES = {
    "data": ["tokenizer.py", "data/**/*.py", "commands/prepare.py"],
    "train": CORE + ["losses.py", "ar.py", "train/**/*.py", "commands/train.py"],
    "sample": CORE + ["ar.py", "sampling/**/*.py", "commands/sample.py"],
    "eval": CORE + ["ar.py", "likelihood.py", "tokenizer.py", "eval/**/*.py", "commands/eval*.py"],
    "bench": CORE + ["ar.py", "sampling/**/*.py", "bench/**/*.py", "commands/bench*.py"],
    "report": ["report.py", "results.py", "paper/*", "commands/report.py"],
}


def source_hash(patterns):
    """sha256 over the (relative path, content) of every file the patterns match, in sorted order."""
    digest = hashlib.sha256()
    files = sorted({p for pattern in patterns for p in PKG.glob(pattern) if p.is_file() and "__pycache__" not in p.parts})
    for path in files:
        digest.update(b"\0".join([str(path.relative_to(PKG)).encode(), path.read_bytes(), b""]))
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
        flag = f"--{key.replace('_', '-')}"
        if value is None or value is False or value == []:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts.append(f"{flag} {' '.join(shlex.quote(str(v)) for v in value)}")
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
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


def conditional_settings(name):
    """MAUVE generation settings: gen-<canvas>-T<steps> for SEDD, the configured sampling settings for GPT-2."""
    return paper_plan.conditional_settings(config, name)


def final_targets():
    """Everything `rule all` builds: the report plus the artefacts it summarises."""
    return [f"{RESULTS}/report.md"]


# ---------------------------------------------------------------- data helpers


def prepare_args(spec):
    """Positional corpus and flags of `pysedd prepare` for one corpus entry of the config."""
    spec = dict(spec)
    corpus = spec.pop("corpus")
    positional = "" if corpus == "local" else corpus
    return f"{positional} {flags(spec)}".strip()


def zero_shot_data(name):
    """(prepared directory, split) of a zero-shot dataset: the training corpus's held-out split or its own packing."""
    if config["zero_shot"]["datasets"][name]["corpus"] == "heldout":
        return f"{RESULTS}/data/train", "validation"
    return f"{RESULTS}/data/eval/{name}", "test"


# ---------------------------------------------------------------- train helpers


def train_options(name):
    return MODELS[name]["train"]


def train_launcher(wc):
    """torchrun for data-parallel training (nproc > 1), the plain command otherwise."""
    nproc = train_options(wc.model).get("nproc", 1)
    if nproc > 1:
        return f"torchrun --standalone --nproc_per_node {nproc} -m pysedd"
    return PYSEDD


# ---------------------------------------------------------------- sample helpers


def conditional_options(name, setting):
    """Options of a prompted sampling job: prompts, lengths and, for SEDD, the sampler and the canvas."""
    m = config["mauve"]
    options = {
        "num_samples": m["prompts"]["num_prompts"],
        "prompt_len": m["prompt_len"],
        "gen_len": m["gen_len"],
        "batch_size": m["batch_size"],
        "seed": m["seed"],
    }
    if MODELS[name]["kind"] == "sedd":
        canvas, steps = setting.removeprefix("gen-").split("-T")
        options.update(sampler=m["sampler"], steps=int(steps), canvas=int(canvas))
    else:
        options.update(m["gpt2"][setting])
    return options


# ---------------------------------------------------------------- eval helpers


def judge_path():
    return model_path(JUDGE)


def lm_eval_data(wc):
    return [f"{RESULTS}/data/lm-eval"] if config["lm_eval"]["local_data"] == "heldout" else []


def diversity_reference():
    """(prepared directory, split) of the real-text row of Table 4, or None."""
    name = config["diversity"]["reference"]
    if name == "none":
        return None
    if name == "heldout":
        return f"{RESULTS}/data/train", "validation"
    if name == paper_plan.real_text_name(config):
        return f"{RESULTS}/data/real/{name}", "test"
    if name not in config["zero_shot"]["datasets"]:
        raise ValueError(f"config key 'diversity.reference': {name!r} is neither heldout, none nor a zero_shot dataset")
    return zero_shot_data(name)


def mauve_options():
    """MAUVE settings: the same prompts, lengths, seeds and bucket count for every model."""
    m = config["mauve"]
    return {"n_prompts": m["prompts"]["num_prompts"], "prompt_len": m["prompt_len"], "gen_len": m["gen_len"],
            "seeds": m["seeds"], "num_buckets": m.get("num_buckets"), "batch_size": m["batch_size"]}


def latency_options():
    """`bench latency` flags: everything but the model choice; fhs false must be said (--no-fhs), not omitted."""
    options = {k: v for k, v in config["latency"].items() if k not in ("sedd", "gpt2", "fhs")}
    options["fhs" if config["latency"]["fhs"] else "no_fhs"] = True
    return options


def latency_model(kind):
    """What `bench latency` gets for one side: a configured model (path or hub id), else the string itself."""
    chosen = config["latency"].get(kind) or next(iter(models_of(kind, "subject")), None)
    if chosen is None:
        raise ValueError(f"config key 'latency.{kind}': no {kind} model configured; name one or give a preset/hub id")
    return (model_path(chosen), model_input(chosen)) if chosen in MODELS else (chosen, [])


# ---------------------------------------------------------------- report helpers


def evaluation_results():
    """Every JSON result the report reads: the report's own plan of the config (pysedd.report.result_files)."""
    diversity_reference()  # a reference that names nothing fails here, before any job
    return [f"{RESULTS}/{path}" for path in paper_plan.result_files(config)]


def local_inputs():
    """(config key, path) of every local file the config reads: corpora given as files and the MAUVE prompts."""
    out = [(f"zero_shot.datasets.{d}.path", p) for d, spec in config["zero_shot"]["datasets"].items()
           for p in spec.get("path", [])]
    out += [("data.path", p) for p in config["data"].get("path", [])]
    out += [("real_text.path", p) for p in (config.get("real_text") or {}).get("path", [])]
    if config["mauve"]["prompts"]["source"] == "file":
        out.append(("mauve.prompts.path", config["mauve"]["prompts"]["path"]))
    return out


MISSING_INPUTS = [(key, p) for key, p in local_inputs() if not Path(p).is_file()]
if MISSING_INPUTS:
    raise ValueError("local files the config needs are missing; download them first (see the config's header and "
                     "the README): " + "; ".join(f"{p} (config key {key})" for key, p in MISSING_INPUTS))
