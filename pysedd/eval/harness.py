"""SEDD as an lm-evaluation-harness model (registered as `sedd`), a JSON request cache that makes lm-eval runs
resumable, and `run_lm_eval`, which wraps lm-eval's own runner.

A request (context, continuation) is scored as −(Monte-Carlo conditional NELBO of the target given the context): the
context stays clean, only target positions are corrupted, K draws of t (docs/evaluation-fidelity.md, "lm-eval"). Framing
(`eos_framing`): "both" (default) scores [EOS] + tok(context) ++ tok(continuation) + [EOS] (EOS doubles as BOS, as in
GPT-2 and SEDD's packed training data: the leading EOS marks a document start, the trailing one anchors the target's
right edge for a bidirectional model and is scored with it); "none" scores tok(context) ++ tok(continuation), the
framing lm-eval's `hf` model gives GPT-2.

Common random numbers: every request of one document (the choices of one question) draws its t values and target
masks from one stream, keyed by the base seed, the task and the document id, so the comparison between choices is
nearly free of Monte-Carlo noise whatever the task's shape (one context and several continuations, as HellaSwag, or
several contexts and one continuation, as WinoGrande). A number depends on neither the order nor the batching of
requests. `is_greedy` (used by LAMBADA acc) comes from one forward pass with the continuation masked at σ(ε): greedy
iff the argmax over real tokens is the target everywhere. `generate_until` fills the positions after the context with
the analytic sampler.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (fills lm-eval's registry first; it stays empty of 'hf' otherwise)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import MODEL_REGISTRY, register_model
from tqdm.auto import tqdm

from ..errors import UserError
from ..io import atomic_write_text
from .common import LoadedModel, default_device, derived_seed, load_model

MODEL_NAME = "sedd"
EOS_FRAMINGS = ("both", "none")


def document_key(seed: int, request, *extra) -> int:
    """The random stream of one document: (seed, task, document id) when lm-eval gives them; requests built by hand
    (no doc_id) fall back to their first argument (the context)."""
    doc_id = getattr(request, "doc_id", None)
    if doc_id is not None:
        return derived_seed(seed, "doc", getattr(request, "task_name", None), doc_id, *extra)
    return derived_seed(seed, request.args[0], *extra)


def _positive_int(value, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1 or str(number) != str(value).strip():
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return number


class SEDDLM(LM):
    """lm-eval model: `--model sedd --model_args pretrained=louaaron/sedd-small,n_samples=1024,seed=0`.

    batch_size (lm-eval's `--batch_size`, or `batch_size=` in model_args, which wins) counts requests; each request's
    K draws go through the network `mc_batch_size` at a time, so a forward pass holds at most
    batch_size × mc_batch_size rows. Only requests of equal length share a forward pass (padding would change what a
    bidirectional model sees)."""

    def __init__(self, pretrained: str | LoadedModel, tokenizer: str = "gpt2", n_samples: int = 256, seed: int = 0,
                 batch_size: int | str = 1, mc_batch_size: int = 16, sampling_eps: float = 1e-3, greedy: bool = True,
                 eos_framing: str = "both", device: str | None = None, max_length: int | None = None,
                 gen_steps: int = 128, disable_tqdm: bool = False, **unused: Any):
        super().__init__()
        from ..tokenizer import get_tokenizer

        if eos_framing not in EOS_FRAMINGS:
            raise UserError(f"eos_framing must be one of {', '.join(EOS_FRAMINGS)}, got {eos_framing!r}")
        if str(batch_size).startswith("auto"):  # lm-eval's "auto" probes memory with padded batches; SEDD cannot pad
            batch_size = 1
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.mc_batch_size = _positive_int(mc_batch_size, "mc_batch_size")
        self.n_samples = _positive_int(n_samples, "n_samples")
        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            device = default_device()  # lm-eval's CLI asks for cuda by default, as its hf model falls back
        self.lm = pretrained if isinstance(pretrained, LoadedModel) else load_model(str(pretrained), "sedd", device)
        if self.lm.kind != "sedd":
            raise UserError(f"the {MODEL_NAME} lm-eval model needs a SEDD checkpoint; use model 'hf' for GPT-2")
        self.tokenizer = get_tokenizer(tokenizer)
        self.seed = int(seed)
        self.sampling_eps = float(sampling_eps)
        self.greedy = str(greedy).lower() not in ("false", "0", "no")
        self.eos_framing = eos_framing
        self.max_length = int(max_length or self.lm.max_length)
        self.gen_steps = int(gen_steps)
        self.disable_tqdm = disable_tqdm
        self.eos = self.tokenizer.eos_id

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "SEDDLM":
        """lm-eval passes its CLI's batch_size/device beside the model_args; a key given in both comes from model_args
        (lm-eval's base class would raise 'got multiple values for keyword argument')."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "SEDDLM":
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def settings(self) -> dict:
        """What moves a number: recorded in every result's protocol block."""
        return {"n_samples": self.n_samples, "seed": self.seed, "sampling_eps": self.sampling_eps, "stratified": True,
                "eos_framing": self.eos_framing, "greedy_pass": self.greedy, "batch_size": self.batch_size,
                "mc_batch_size": self.mc_batch_size, "max_length": self.max_length, "gen_steps": self.gen_steps,
                "common_random_numbers": "per document: t draws and target masks from (seed, task, doc_id)"}

    # -- pieces ---------------------------------------------------------------------------------------------------
    def _frame(self, context_text: str, continuation_text: str) -> tuple[list[int], list[int]]:
        """(context ids, target ids) under the EOS framing, the context left-truncated to fit the model."""
        context, target = self.tokenizer.encode(context_text), self.tokenizer.encode(continuation_text)
        if self.eos_framing == "both":
            context, target = [self.eos] + context, target + [self.eos]
        return self._fit(context, target), target

    def _fit(self, context: list[int], target: list[int]) -> list[int]:
        """Left-truncate the context so that context + target fit the model's length."""
        if len(target) + 1 > self.max_length:
            raise UserError(f"a continuation of {len(target)} tokens does not fit the model's {self.max_length}-token context")
        return context[-(self.max_length - len(target)):]

    def _nelbo(self, contexts: list[list[int]], targets: list[list[int]], keys: list[int]) -> list[float]:
        from ..likelihood import conditional_nelbo

        return conditional_nelbo(self.lm.model, self.lm.graph, self.lm.noise, contexts, targets, n_samples=self.n_samples,
                                 seed=self.seed, keys=keys, sampling_eps=self.sampling_eps,
                                 batch_size=self.batch_size * min(self.mc_batch_size, self.n_samples))

    @torch.no_grad()
    def _is_greedy(self, context: list[int], target: list[int]) -> bool:
        """One pass with the continuation masked (a framing EOS after it stays clean, as a right anchor)."""
        graph = self.lm.graph
        if not graph.absorb:  # the one-pass test needs a MASK token
            return False
        n = len(target) - (self.eos_framing == "both")
        x = torch.tensor([context + [graph.mask_index] * n + target[n:]], device=self.lm.device)
        sigma, _ = self.lm.noise(torch.tensor([self.sampling_eps], device=self.lm.device))
        log_score = self.lm.model(x, sigma)[0, len(context):len(context) + n, : graph.mask_index]
        return bool((log_score.argmax(-1).cpu() == torch.tensor(target[:n])).all())

    # -- lm-eval API ----------------------------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Requests go `batch_size` at a time, sorted by length so that equal lengths share forward passes; each
        draws its randomness from its document's stream (common random numbers across the choices of a question)."""
        framed = [self._frame(*req.args) for req in requests]
        keys = [document_key(self.seed, req) for req in requests]
        order = sorted(range(len(requests)), key=lambda i: len(framed[i][0]) + len(framed[i][1]))
        out: list = [None] * len(requests)
        with tqdm(total=len(requests), desc="sedd loglikelihood", disable=disable_tqdm or self.disable_tqdm) as bar:
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                nelbos = self._nelbo([framed[i][0] for i in idx], [framed[i][1] for i in idx], [keys[i] for i in idx])
                for i, nelbo in zip(idx, nelbos):
                    greedy = self._is_greedy(*framed[i]) if self.greedy else False
                    out[i] = (-nelbo, greedy)
                    self.cache_hook.add_partial("loglikelihood", requests[i].args, out[i])
                bar.update(len(idx))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """lm-eval's disjoint rolling windows (as its hf model): max_length−1 target tokens after 1+ preceding tokens."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        out = []
        for req in tqdm(requests, desc="sedd loglikelihood_rolling", disable=disable_tqdm or self.disable_tqdm):
            (text,) = req.args
            tokens = self.tokenizer.encode(text)
            windows = map(make_disjoint_window, get_rolling_token_windows(tokens, self.eos, self.max_length - 1, 1))
            total = 0.0
            for k, (context, target) in enumerate(windows):
                total -= self._nelbo([self._fit(context, target)], [target], [document_key(self.seed, req, k)])[0]
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return out

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Fill `max_gen_toks` positions after the (framed) context with the analytic sampler (`gen_steps` steps, the
        prompt clamped), decode them, and cut at the first `until` string."""
        from ..sampling import Conditioning, pc_sample

        out = []
        for req in tqdm(requests, desc="sedd generate_until", disable=disable_tqdm or self.disable_tqdm):
            context_text, gen_kwargs = req.args
            until = gen_kwargs.get("until") or [self.tokenizer.decode([self.eos])]
            until = [until] if isinstance(until, str) else list(until)
            n_new = int(gen_kwargs.get("max_gen_toks", 256))
            if n_new + 1 > self.max_length:
                raise UserError(f"max_gen_toks {n_new} does not fit the model's {self.max_length}-token context")
            context = [self.eos] * (self.eos_framing == "both") + self.tokenizer.encode(context_text)
            context = context[-(self.max_length - n_new):]
            generator = torch.Generator(self.lm.device).manual_seed(document_key(self.seed, req))
            res = pc_sample(self.lm.model, self.lm.graph, self.lm.noise, 1, len(context) + n_new, self.gen_steps,
                            generator=generator, conditioning=Conditioning.prefix([context]) if context else None)
            text = self.tokenizer.decode(res.samples[0, len(context):].tolist())
            for stop in until:
                text = text.split(stop)[0]
            out.append(text)
            self.cache_hook.add_partial("generate_until", req.args, text)
        return out


class ResumableLM(LM):
    """Any lm-eval model, with every answered request kept as JSON in `directory` (pysedd's own cache; lm-eval's
    request cache is a sqlite file of pickles, which pysedd never reads). Requests are answered `chunk` at a time and
    each chunk's answers are written atomically to their own file, so a killed run loses at most one chunk; a file
    that does not parse is ignored and its requests are answered again."""

    METHODS = ("loglikelihood", "loglikelihood_rolling", "generate_until")

    def __init__(self, inner: LM, directory: str | Path, chunk: int = 64):
        super().__init__()
        self.inner, self.dir, self.chunk = inner, Path(directory), chunk
        self.dir.mkdir(parents=True, exist_ok=True)
        self.answers: dict[str, Any] = {}  # request key -> answer, from JSON only
        for path in sorted(self.dir.glob("*.json")):
            try:
                shard = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(shard, dict):
                self.answers.update(shard)

    def __getattr__(self, name: str):  # rank, world_size, get_model_info, batch_sizes, ... of the wrapped model
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @staticmethod
    def key(method: str, request) -> str:
        ident = [method, getattr(request, "task_name", None), getattr(request, "doc_id", None), request.args]
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()

    def _answer(self, method: str, requests) -> list:
        keys = [self.key(method, r) for r in requests]
        todo = [i for i, k in enumerate(keys) if k not in self.answers]
        for start in range(0, len(todo), self.chunk):
            idx = todo[start:start + self.chunk]
            results = getattr(self.inner, method)([requests[i] for i in idx])
            shard = {keys[i]: (list(r) if isinstance(r, tuple) else r) for i, r in zip(idx, results)}
            name = hashlib.sha256("".join(shard).encode()).hexdigest()[:16]
            atomic_write_text(self.dir / f"{method}-{name}.json", json.dumps(shard))
            self.answers.update(shard)
        if method == "loglikelihood":
            return [(float(self.answers[k][0]), bool(self.answers[k][1])) for k in keys]
        return [self.answers[k] for k in keys]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._answer("loglikelihood", requests)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._answer("loglikelihood_rolling", requests)

    def generate_until(self, requests, disable_tqdm: bool = False):
        return self._answer("generate_until", requests)


if MODEL_NAME not in MODEL_REGISTRY.keys():  # importing this module twice must not register a second class
    register_model(MODEL_NAME)(SEDDLM)


# -- the runner -------------------------------------------------------------------------------------------------------

PAPER_COLUMNS = {"lambada_openai": "LAMBADA acc", "hellaswag": "HellaSwag", "arc_easy": "ARC-e", "arc_challenge": "ARC-c",
                 "winogrande": "WinoGrande", "piqa": "PIQA"}


def build_lm(lm: LoadedModel, *, n_samples: int, seed: int, batch_size: int, mc_batch_size: int = 16,
             greedy: bool = True, eos_framing: str = "both", tokenizer: str = "gpt2") -> LM:
    """SEDD through our `sedd` model; GPT-2 through lm-eval's own `hf` model (with the same GPT-2 tokenizer)."""
    if lm.kind == "sedd":
        return SEDDLM(lm, tokenizer=tokenizer, n_samples=n_samples, seed=seed, batch_size=batch_size,
                      mc_batch_size=mc_batch_size, greedy=greedy, eos_framing=eos_framing)
    from lm_eval.models.huggingface import HFLM

    from ..tokenizer import get_tokenizer

    return HFLM(pretrained=lm.model, tokenizer=get_tokenizer(tokenizer).as_transformers_tokenizer(),
                batch_size=batch_size, max_length=lm.max_length, device=str(lm.device))


def protocol(model: LM) -> dict:
    """How the log-likelihoods behind a result were computed."""
    inner = getattr(model, "inner", model)
    if isinstance(inner, SEDDLM):
        return {"likelihood": "SEDD: -(conditional NELBO of the target given the clean context), stratified t",
                **inner.settings(), "eos_framing_meaning": {
                    "both": "[EOS]+tok(context) ++ tok(continuation)+[EOS], the trailing EOS scored",
                    "none": "tok(context) ++ tok(continuation), as lm-eval's hf model for GPT-2"}[inner.eos_framing]}
    return {"likelihood": "exact, lm-eval's hf model", "eos_framing": "none",
            "eos_framing_meaning": "tok(context) ++ tok(continuation); EOS only as the context of an empty context",
            "batch_size": getattr(inner, "batch_size", None)}


def run_lm_eval(lm: LoadedModel, tasks: list[str], *, data_files: dict[str, str], cache_dir: str, n_samples: int = 256,
                seed: int = 0, batch_size: int = 1, mc_batch_size: int = 16, limit: int | float | None = None,
                num_fewshot: int = 0, greedy: bool = True, eos_framing: str = "both", bootstrap_iters: int = 0,
                request_cache: str | None = None) -> dict:
    """lm-eval's `simple_evaluate` on built-in task names, or on local copies (tasks named in `data_files`).

    Returns lm-eval's results dict (JSON-safe), `pysedd` provenance of the local files and the protocol.
    `request_cache` is a directory for `ResumableLM`'s JSON answers: a rerun after a kill skips every request
    already answered. lm-eval's own caches (pickles) stay off."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from .local_tasks import check_task, local_task_yaml

    task_specs, provenance = [], {}
    for task in tasks:
        check_task(task)
        if task in data_files:
            yaml_path, info = local_task_yaml(task, data_files[task], cache_dir)
            task_specs.append(str(yaml_path))
            provenance[task] = info
        else:
            task_specs.append(task)
            provenance[task] = {"task": task, "source": "lm-eval built-in (hub)"}
    # indexing lm-eval's thousands of built-in YAMLs takes tens of seconds; local task YAMLs include theirs by path
    all_local = all(task in data_files for task in tasks)
    model = build_lm(lm, n_samples=n_samples, seed=seed, batch_size=batch_size, mc_batch_size=mc_batch_size,
                     greedy=greedy, eos_framing=eos_framing)
    if request_cache is not None:
        model = ResumableLM(model, request_cache)
    try:
        results = lm_eval.simple_evaluate(
            model=model, tasks=task_specs, task_manager=TaskManager(include_defaults=not all_local),
            num_fewshot=num_fewshot, limit=limit, bootstrap_iters=bootstrap_iters, log_samples=False,
            use_cache=None, cache_requests=False, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except ConnectionError as e:  # a built-in task's dataset is on the hub
        raise UserError(f"{str(e).splitlines()[0]}: offline, give the task's data with --local-data or --task-file") from None
    if results is None:
        raise UserError("lm-eval returned no results")
    from lm_eval.utils import handle_non_serializable

    safe = json.loads(json.dumps(results, default=handle_non_serializable))
    info = {**protocol(model), "request_cache": "pysedd JSON (ResumableLM)" if request_cache else None}
    return {"lm_eval": safe, "tasks": provenance, "protocol": info}


def task_metrics(lm_eval_results: dict) -> dict[str, dict]:
    """{paper task name: {metric: value}} from lm-eval's results (local tasks mapped back to their built-in names)."""
    from .local_tasks import LOCAL_SUFFIX

    out = {}
    for name, metrics in lm_eval_results.get("results", {}).items():
        task = name.removesuffix(LOCAL_SUFFIX)
        out[task] = {k.split(",")[0]: v for k, v in metrics.items() if "," in k and "stderr" not in k}
    return out


def table(rows: list[tuple[str, dict]]) -> str:
    """Table 2: accuracy per task (acc / acc_norm), LAMBADA also as perplexity."""
    from .common import markdown_table

    tasks = [t for t in PAPER_COLUMNS if any(t in m for _, m in rows)]
    header = ["model"] + [PAPER_COLUMNS[t] for t in tasks] + (["LAMBADA ppl"] if "lambada_openai" in tasks else [])
    body = []
    for name, metrics in rows:
        row = [name]
        for t in tasks:
            m = metrics.get(t, {})
            cells = [f"{100 * m[k]:.2f}" for k in ("acc", "acc_norm") if m.get(k) is not None]
            row.append(" / ".join(cells) or "–")
        if "lambada_openai" in tasks:
            ppl = metrics.get("lambada_openai", {}).get("perplexity")
            row.append("–" if ppl is None else f"{ppl:.2f}")
        body.append(row)
    return markdown_table(header, body) + ("\n\nAccuracy in %, acc / acc_norm (length-normalised) where lm-eval reports "
                                           "both; SEDD log-likelihoods are ELBO bounds.")
