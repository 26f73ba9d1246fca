"""Shared helpers: config validation and the checks the schema cannot express, per-rule code fingerprints, model
paths and CLI flag rendering.

Every rule passes its settings through `params:` (whole sub-dicts of the config) plus `code=CODE[<rule>]`, a hash of
the pysedd code that rule's command reaches through the import graph (workflow/lib/codehash.py), because Snakemake's
code trigger only sees the shell template, not imported code. Training is the exception: see train.smk.
"""
import base64
import copy
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate



def retype_overrides(target, overrides):
    """`--config key={...}` parses nested values with YAML's BaseLoader, so every nested leaf arrives as a string
    ('2', 'true'). Read each such leaf again as YAML (2, true), so typed nested overrides work as written."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            retype_overrides(target[key], value)
        elif isinstance(value, str) and target.get(key) == value:
            try:
                target[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        elif isinstance(value, list) and target.get(key) == value:
            target[key] = [yaml.safe_load(v) if isinstance(v, str) else v for v in value]


for _key, _value in (workflow.config_settings.config if workflow.config_settings else {}).items():
    if isinstance(_value, dict) and isinstance(config.get(_key), dict):
        retype_overrides(config[_key], _value)

validate(config, "../schemas/config.schema.yaml")

REPO = Path(workflow.basedir)
RESULTS = config["results_dir"]
PYSEDD = config["pysedd"]  # the command that runs pysedd, e.g. "pysedd" or "python -m pysedd"

sys.path.insert(0, str(REPO / "workflow" / "lib"))
sys.path.insert(0, str(REPO))  # this checkout's pysedd: the report's plan names the result files the rules write
import pysedd.report as paper_plan  # noqa: E402
from codehash import CodeGraph, cli_entries  # noqa: E402
from pysedd.defaults import WORKFLOW as PYSEDD_DEFAULTS  # noqa: E402

# the settings the CLI and the workflow share take pysedd's own defaults (the schema states none for them)
for _dotted, _value in PYSEDD_DEFAULTS.items():
    *_parents, _leaf = _dotted.split(".")
    _node = config
    for _part in _parents:
        _node = _node.setdefault(_part, {})
    _node.setdefault(_leaf, copy.deepcopy(_value))

_CODE_GRAPH = CodeGraph(REPO)


def _cli_code(command, handler):
    return _CODE_GRAPH.fingerprint(cli_entries(REPO, command, handler))


# rule -> fingerprint of the code its command reaches (comments and docstrings do not count)
CODE = {
    "prepare": _cli_code("prepare", "run"),
    "heldout_tasks": _CODE_GRAPH.fingerprint([("workflow/scripts/heldout_tasks.py", None)]),
    "prompts": _CODE_GRAPH.fingerprint([("workflow/scripts/prompts.py", None)]),
    "sample": _cli_code("sample", "run"),
    "zero_shot": _cli_code("eval", "run_zero_shot"),
    "lm_eval": _cli_code("eval", "run_lm_eval"),
    "gen_ppl": _cli_code("eval", "run_gen_ppl"),
    "diversity": _cli_code("eval", "run_diversity"),
    "mauve": _cli_code("eval", "run_mauve"),
    "latency": _cli_code("bench", "run_latency"),
    "real_text_samples": _CODE_GRAPH.fingerprint([("pysedd.eval.common", frozenset({"load_token_blocks"}))]),
    # the paper tables data file is read by the report, not imported: it counts too
    "report": _cli_code("report", "run") + hashlib.sha256((REPO / "pysedd" / "paper" / "tables.yaml").read_bytes()).hexdigest()[:16],
}


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


# ---------------------------------------------------------------- models


MODELS = config["models"]


def models_of(kind, role=None):
    """Names of the configured models of one kind ('sedd' or 'gpt2'), in config order; role filters judge/subjects."""
    return [name for name, m in MODELS.items() if m["kind"] == kind and (role is None or m["role"] == role)]


SUBJECTS = [name for name, m in MODELS.items() if m["role"] == "subject"]
JUDGE = config["judge"]


# ---------------------------------------------------------------- checks the schema cannot express


def config_error(key, message):
    """Stop before any job starts, naming the config key."""
    raise WorkflowError(f"config key '{key}': {message}")


def looks_local(spec):
    """A `hub:` value that is a filesystem path rather than a hub id ('org/name' or 'name')."""
    return spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1 or os.path.isdir(spec)


# random-weight presets `pysedd bench latency` builds (SEDD's and GPT-2's, read from this checkout's pysedd)
from pysedd.ar import GPT2_PRESETS  # noqa: E402
from pysedd.config import PRESETS as SEDD_PRESETS  # noqa: E402

MODEL_PRESETS = {"sedd": tuple(SEDD_PRESETS), "gpt2": tuple(GPT2_PRESETS)}
WEBTEXT_URL = "https://openaipublic.azureedge.net/gpt-2/output-dataset/v1/webtext.test.jsonl"


def local_files(spec) -> list:
    """The local files a corpus spec names by `path:`: declared as the preparing rule's inputs, so that replacing one
    (a newer file) reruns its tokenisation and what depends on it."""
    return list(spec.get("path", [])) if isinstance(spec, dict) else []


def check_config():
    """Settings that pass the schema and `snakemake -n` but would fail at job time: refuse them now."""
    if JUDGE not in MODELS or MODELS[JUDGE]["kind"] != "gpt2":
        config_error("judge", f"{JUDGE!r} must name a gpt2 model under 'models'")
    corpora = [("data", config["data"]), ("real_text", config.get("real_text") or {})] + [
        (f"zero_shot.datasets.{name}", spec) for name, spec in config["zero_shot"]["datasets"].items()]
    distill_data = (config.get("distill") or {}).get("data")
    if isinstance(distill_data, dict):
        corpora.append(("distill.data", distill_data))
    for key, spec in corpora:
        for path in local_files(spec):
            if not os.path.isfile(path):
                config_error(f"{key}.path", f"local corpus file {path} does not exist (fetch it on a login node, "
                             "see workflow/README.md, Offline compute nodes)")
    seq_len = config["seq_len"]
    for name, m in MODELS.items():
        if "hub" in m and looks_local(m["hub"]) and not os.path.isdir(os.path.expanduser(m["hub"])):
            config_error(f"models.{name}.hub", f"local model directory {m['hub']} does not exist")
        train = m.get("train", {})
        batch, micro, nproc = train.get("batch_size"), train.get("micro_batch_size", 0), train.get("nproc", 1)
        if batch is not None and batch % nproc:
            config_error(f"models.{name}.train.batch_size", f"{batch} is not a multiple of nproc {nproc}")
        if batch is not None and micro and (batch // nproc) % micro:
            config_error(f"models.{name}.train.micro_batch_size",
                         f"{micro} does not divide batch_size / nproc = {batch // nproc}")
    trained = {name for name, m in MODELS.items() if "train" in m}
    unc, mauve = config["unconditional"], config["mauve"]
    for name in sorted(trained & set(SUBJECTS)):
        if unc["length"] > seq_len:
            config_error("unconditional.length", f"{unc['length']} is longer than the context of the trained model "
                         f"{name!r} (seq_len {seq_len})")
        if MODELS[name]["kind"] == "sedd":
            for canvas in mauve["canvases"]:
                if canvas > seq_len:
                    config_error("mauve.canvases", f"canvas {canvas} is longer than the context of the trained "
                                 f"model {name!r} (seq_len {seq_len})")
        elif mauve["prompt_len"] + mauve["gen_len"] > seq_len:
            config_error("mauve.gen_len", f"prompt_len + gen_len = {mauve['prompt_len'] + mauve['gen_len']} is "
                         f"longer than the context of the trained model {name!r} (seq_len {seq_len})")
    for canvas in mauve["canvases"]:
        if canvas < mauve["prompt_len"] + mauve["gen_len"]:
            config_error("mauve.canvases", f"canvas {canvas} is shorter than prompt_len + gen_len = "
                         f"{mauve['prompt_len'] + mauve['gen_len']}")
    prompts = mauve["prompts"]
    if prompts["source"] == "file" and not os.path.isfile(prompts["path"]):
        hint = f"wget {WEBTEXT_URL} -P {os.path.dirname(prompts['path']) or '.'}" if "webtext" in prompts["path"] \
            else "copy it there"
        config_error("mauve.prompts.path", f"prompt file {prompts['path']} does not exist; on a login node: {hint}")
    if (config.get("frontier") or {}).get("in_report") and config.get("distill") is None:
        config_error("frontier.in_report", "the frontier needs a 'distill' block (its students) to be in the report")
    lm_data = config["lm_eval"]["local_data"]
    if lm_data not in ("heldout", "hub") and not os.path.isdir(lm_data):
        config_error("lm_eval.local_data", f"task data directory {lm_data} does not exist (copy the tasks' files "
                     "there, or use `hub` after `python workflow/scripts/prepare_offline.py CONFIG` on a login node)")
    for kind in ("sedd", "gpt2"):
        chosen = config["latency"].get(kind)
        if chosen is None or chosen in MODEL_PRESETS[kind]:
            continue
        if chosen in MODELS:
            if MODELS[chosen]["kind"] != kind:
                config_error(f"latency.{kind}", f"{chosen!r} is a {MODELS[chosen]['kind']} model, not {kind}")
        elif looks_local(chosen):
            if not os.path.isdir(os.path.expanduser(chosen)):
                config_error(f"latency.{kind}", f"local model directory {chosen} does not exist")
        elif "/" not in chosen and not (kind == "gpt2" and chosen.startswith(("gpt2", "distilgpt2"))):
            config_error(f"latency.{kind}", f"{chosen!r} is neither a model under 'models' "
                         f"({', '.join(models_of(kind)) or 'none'}), a preset ({', '.join(MODEL_PRESETS[kind])}) nor a hub id")


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
        return {**common, "sampler": unc["sedd"]["sampler"], "categorical": unc["sedd"]["categorical"],
                "steps": int(setting[1:])}
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


def train_threads(name):
    """CPUs of a training job: cpus_per_gpu for each of its GPUs (torchrun workers need their own data threads)."""
    return max(2, config["cpus_per_gpu"] * config["gpus_per_job"] * train_options(name).get("nproc", 1))


def gpu_threads():
    """CPUs of a one-process network job."""
    return max(2, config["cpus_per_gpu"] * config["gpus_per_job"])


# SLURM time limits (minutes) unless the config's `runtime` says otherwise; long jobs checkpoint (train) or resume
# from shards (evaluations) when resubmitted.
RUNTIME_DEFAULTS = {"prepare_train": 720, "train": 2880, "lm_eval": 720, "zero_shot": 240, "sample": 240,
                    "sample_conditional": 240}


def runtime_of(rule):
    return config["runtime"].get(rule, RUNTIME_DEFAULTS.get(rule, 120))


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
        options.update(sampler=m["sampler"], categorical=m["categorical"], steps=int(steps), canvas=int(canvas))
    else:
        options.update(m["gpt2"][setting])
    return options


# ---------------------------------------------------------------- eval helpers


def judge_path():
    return model_path(JUDGE)


def lm_eval_data(wc):
    """The task-file directory lm-eval reads: made from held-out text, a configured local directory, or none (hub)."""
    local = config["lm_eval"]["local_data"]
    return [f"{RESULTS}/data/lm-eval"] if local == "heldout" else [] if local == "hub" else [local]


def lm_eval_options(name):
    """`eval lm-eval` flags of one model: the configured options; eos_framing only for SEDD (GPT-2 always goes through
    lm-eval's hf framing), so changing it reruns SEDD's lm-eval jobs only."""
    options = dict(config["lm_eval"]["options"])
    if MODELS[name]["kind"] != "sedd":
        options.pop("eos_framing", None)
    return options


def diversity_options():
    """`eval diversity` flags: everything but the real-text reference (which only the reference row depends on)."""
    return {k: v for k, v in config["diversity"].items() if k != "reference"}


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
    """MAUVE settings: the same prompts, lengths, seeds, bucket count and features for every model."""
    m = config["mauve"]
    return {"num_prompts": m["prompts"]["num_prompts"], "prompt_len": m["prompt_len"], "gen_len": m["gen_len"],
            "mauve_seeds": m["seeds"], "num_buckets": m.get("num_buckets"), "batch_size": m["batch_size"],
            "features": m["features"], "max_text_length": m["max_text_length"]}


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



check_config()


# ---------------------------------------------------------------- deleted intermediates


def stale_outputs(metadata=Path(".snakemake/metadata")):
    """Existing outputs whose recorded inputs no longer exist (a deleted samples .npz, eval JSON, an export removed
    by a failed or interrupted retrain).

    Snakemake treats a missing intermediate file as fine while what was made from it exists ("Nothing to be done"),
    so a deleted result would never come back and the report would keep summarising the old one. Reading the
    provenance Snakemake records for every output (the file backend, one JSON per output under
    .snakemake/metadata, its name the urlsafe base64 of the path in chunks prefixed '@'), these outputs are forced
    to rerun, which regenerates the missing input first and then everything downstream.
    """
    stale = []
    if not metadata.is_dir():
        return stale
    for record in metadata.rglob("*"):
        if not record.is_file():
            continue
        try:
            path = base64.urlsafe_b64decode("".join(p.lstrip("@") for p in record.relative_to(metadata).parts)).decode()
            inputs = json.loads(record.read_text()).get("input") or []
        except (ValueError, OSError):
            continue
        if os.path.exists(path) and any(not os.path.exists(i) for i in inputs):
            stale.append(path)
    return sorted(stale)


STALE = stale_outputs()


def force_stale(wildcards):
    """An input function of every rule (it adds no input): once the DAG exists, force the stale outputs to rerun."""
    dag = workflow.dag
    if STALE and dag is not None and not dag.forcefiles.issuperset(STALE):
        print(f"pysedd workflow: {len(STALE)} output(s) were made from files that no longer exist and will be "
              f"regenerated: {', '.join(STALE[:4])}{' ...' if len(STALE) > 4 else ''}", file=sys.stderr)
        dag.forcefiles.update(STALE)
    return []
