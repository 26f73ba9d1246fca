"""SEDD as an lm-evaluation-harness model (registered as `sedd`), and `run_lm_eval`, which wraps lm-eval's own runner.

A request (context, continuation) becomes the sequence [EOS] + tok(context) ++ tok(continuation) + [EOS] (EOS doubles
as BOS, as in GPT-2). Its log-likelihood is −(Monte-Carlo conditional NELBO of the target, tok(continuation) + [EOS]):
the context stays clean, only target positions are corrupted, K draws of t (evaluation-protocols.md §2.1). The seed
of a request is derived from the base seed and its context, so a number does not depend on the order or the batching
of requests, and the choices of one question share their t draws. `is_greedy` (used by LAMBADA acc) comes from one
forward pass on [EOS]+ctx ++ [MASK]×(|target|−1) ++ [EOS] at σ(ε): greedy iff the argmax over real tokens is the
target everywhere.
`generate_until` fills the positions after the context with the analytic sampler.
"""
from __future__ import annotations

import json
from typing import Any

import lm_eval.models  # noqa: F401  (fills lm-eval's registry first; it stays empty of 'hf' otherwise)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import MODEL_REGISTRY, register_model
from tqdm.auto import tqdm

from ..errors import UserError
from .common import LoadedModel, default_device, derived_seed, load_model

MODEL_NAME = "sedd"


class SEDDLM(LM):
    """lm-eval model: `--model sedd --model_args pretrained=louaaron/sedd-small,n_samples=1024,seed=0`."""

    def __init__(self, pretrained: str | LoadedModel, tokenizer: str = "gpt2", n_samples: int = 256, seed: int = 0,
                 batch_size: int | str = 64, sampling_eps: float = 1e-3, greedy: bool = True, device: str | None = None,
                 max_length: int | None = None, gen_steps: int = 128, disable_tqdm: bool = False, **unused: Any):
        super().__init__()
        from ..tokenizer import get_tokenizer

        if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
            device = default_device()  # lm-eval's CLI asks for cuda by default, as its hf model falls back
        self.lm = pretrained if isinstance(pretrained, LoadedModel) else load_model(str(pretrained), "sedd", device)
        if self.lm.kind != "sedd":
            raise UserError(f"the {MODEL_NAME} lm-eval model needs a SEDD checkpoint; use model 'hf' for GPT-2")
        self.tokenizer = get_tokenizer(tokenizer)
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.batch_size = int(batch_size) if str(batch_size) != "auto" else 64
        self.sampling_eps = float(sampling_eps)
        self.greedy = str(greedy).lower() not in ("false", "0", "no")
        self.max_length = int(max_length or self.lm.max_length)
        self.gen_steps = int(gen_steps)
        self.disable_tqdm = disable_tqdm
        self.eos = self.tokenizer.eos_id

    # -- pieces ---------------------------------------------------------------------------------------------------
    def _fit(self, context: list[int], target: list[int]) -> list[int]:
        """Left-truncate the context so that context + target fit the model's length."""
        if len(target) + 1 > self.max_length:
            raise UserError(f"a continuation of {len(target)} tokens does not fit the model's {self.max_length}-token context")
        return context[-(self.max_length - len(target)):]

    def _nelbo(self, contexts: list[list[int]], targets: list[list[int]], seed: int) -> list[float]:
        from ..likelihood import conditional_nelbo

        return conditional_nelbo(self.lm.model, self.lm.graph, self.lm.noise, contexts, targets, n_samples=self.n_samples,
                                 seed=seed, sampling_eps=self.sampling_eps, batch_size=self.batch_size)

    @torch.no_grad()
    def _is_greedy(self, context: list[int], target: list[int]) -> bool:
        graph = self.lm.graph
        if not graph.absorb:  # the one-pass test needs a MASK token
            return False
        n = len(target) - 1  # the last target token is the EOS, kept as a clean right anchor
        x = torch.tensor([context + [graph.mask_index] * n + target[n:]], device=self.lm.device)
        sigma, _ = self.lm.noise(torch.tensor([self.sampling_eps], device=self.lm.device))
        log_score = self.lm.model(x, sigma)[0, len(context):len(context) + n, : graph.mask_index]
        return bool((log_score.argmax(-1).cpu() == torch.tensor(target[:n])).all())

    # -- lm-eval API ----------------------------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Requests with the same context (the choices of one question) are scored together with one seed derived
        from the context: common random numbers, so the MC noise largely cancels in their comparison."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(req.args[0], []).append(i)
        out: list = [None] * len(requests)
        with tqdm(total=len(requests), desc="sedd loglikelihood", disable=disable_tqdm or self.disable_tqdm) as bar:
            for context_text, idx in groups.items():
                context_ids = [self.eos] + self.tokenizer.encode(context_text)
                targets = [self.tokenizer.encode(requests[i].args[1]) + [self.eos] for i in idx]
                contexts = [self._fit(context_ids, t) for t in targets]
                nelbos = self._nelbo(contexts, targets, derived_seed(self.seed, context_text))
                for i, context, target, nelbo in zip(idx, contexts, targets, nelbos):
                    greedy = self._is_greedy(context, target) if self.greedy else False
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
                total -= self._nelbo([self._fit(context, target)], [target], derived_seed(self.seed, text, str(k)))[0]
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return out

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Fill `max_gen_toks` positions after [EOS]+context with the analytic sampler (`gen_steps` steps, the prompt
        clamped), decode them, and cut at the first `until` string."""
        from ..sampling import Conditioning, pc_sample

        out = []
        for req in tqdm(requests, desc="sedd generate_until", disable=disable_tqdm or self.disable_tqdm):
            context_text, gen_kwargs = req.args
            until = gen_kwargs.get("until") or [self.tokenizer.decode([self.eos])]
            until = [until] if isinstance(until, str) else list(until)
            n_new = int(gen_kwargs.get("max_gen_toks", 256))
            if n_new + 1 > self.max_length:
                raise UserError(f"max_gen_toks {n_new} does not fit the model's {self.max_length}-token context")
            context = ([self.eos] + self.tokenizer.encode(context_text))[-(self.max_length - n_new):]
            generator = torch.Generator(self.lm.device).manual_seed(derived_seed(self.seed, context_text))
            res = pc_sample(self.lm.model, self.lm.graph, self.lm.noise, 1, len(context) + n_new, self.gen_steps,
                            generator=generator, conditioning=Conditioning.prefix([context]))
            text = self.tokenizer.decode(res.samples[0, len(context):].tolist())
            for stop in until:
                text = text.split(stop)[0]
            out.append(text)
            self.cache_hook.add_partial("generate_until", req.args, text)
        return out


if MODEL_NAME not in MODEL_REGISTRY.keys():  # importing this module twice must not register a second class
    register_model(MODEL_NAME)(SEDDLM)


# -- the runner -------------------------------------------------------------------------------------------------------

PAPER_COLUMNS = {"lambada_openai": "LAMBADA acc", "hellaswag": "HellaSwag", "arc_easy": "ARC-e", "arc_challenge": "ARC-c",
                 "winogrande": "WinoGrande", "piqa": "PIQA"}


def build_lm(lm: LoadedModel, *, n_samples: int, seed: int, batch_size: int, greedy: bool = True,
             tokenizer: str = "gpt2") -> LM:
    """SEDD through our `sedd` model; GPT-2 through lm-eval's own `hf` model (with the same GPT-2 tokenizer)."""
    if lm.kind == "sedd":
        return SEDDLM(lm, tokenizer=tokenizer, n_samples=n_samples, seed=seed, batch_size=batch_size, greedy=greedy)
    from lm_eval.models.huggingface import HFLM

    from ..tokenizer import get_tokenizer

    return HFLM(pretrained=lm.model, tokenizer=get_tokenizer(tokenizer).as_transformers_tokenizer(),
                batch_size=batch_size, max_length=lm.max_length, device=str(lm.device))


def run_lm_eval(lm: LoadedModel, tasks: list[str], *, data_files: dict[str, str], cache_dir: str, n_samples: int = 256,
                seed: int = 0, batch_size: int = 16, limit: int | float | None = None, num_fewshot: int = 0,
                greedy: bool = True, bootstrap_iters: int = 0, request_cache: str | None = None) -> dict:
    """lm-eval's `simple_evaluate` on built-in task names, or on local copies (tasks named in `data_files`).

    Returns lm-eval's results dict (JSON-safe) plus `pysedd` provenance of the local files. `request_cache` is an
    lm-eval sqlite request cache: a rerun after a kill skips every request already answered."""
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
    model = build_lm(lm, n_samples=n_samples, seed=seed, batch_size=batch_size, greedy=greedy)
    try:
        results = lm_eval.simple_evaluate(
            model=model, tasks=task_specs, task_manager=TaskManager(include_defaults=not all_local),
            num_fewshot=num_fewshot, limit=limit, bootstrap_iters=bootstrap_iters, log_samples=False,
            use_cache=request_cache, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except ConnectionError as e:  # a built-in task's dataset is on the hub
        raise UserError(f"{str(e).splitlines()[0]}: offline, give the task's data with --local-data or --task-file") from None
    if results is None:
        raise UserError("lm-eval returned no results")
    from lm_eval.utils import handle_non_serializable

    safe = json.loads(json.dumps(results, default=handle_non_serializable))
    return {"lm_eval": safe, "tasks": provenance}


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
