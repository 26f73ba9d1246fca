"""`pysedd eval <name>`: every evaluation of the paper, each writing a JSON result and a markdown table.

Models are read by path or hub id (SEDD: louaaron/sedd-small or a directory; GPT-2: gpt2, gpt2-large or a directory,
including a pysedd training run). Long runs keep finished shards in `<out>.shards/` and resume from them.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .. import results as records
from ..defaults import CATEGORICAL, DIVERSITY, GEN_PPL, LM_EVAL, MAUVE, ZERO_SHOT
from ..errors import UserError
from ..io import require_output_files
from . import Renamed

EXAMPLES = """examples:
  pysedd eval zero-shot --model louaaron/sedd-small --out zs-sedd.json --table zs-sedd.md
  pysedd eval zero-shot --model gpt2 --datasets wikitext2 ptb \\
      --data-file wikitext2=../shared/data/wikitext-2-raw/wiki.test.raw --data-file ptb=../shared/data/ptb/ptb.test.txt --out zs.json
  pysedd eval lm-eval --model louaaron/sedd-small --mc-samples 1024 --local-data ../shared/data --out lm.json
  pysedd eval gen-ppl --samples sedd-T128.npz gpt2.npz --judge gpt2-large --out genppl.json --table genppl.md
  pysedd eval diversity --samples sedd-T128.npz --reference data/owt --out div.json
  pysedd eval mauve --model louaaron/sedd-small --canvas 1024 --prompts ../shared/data/webtext/webtext.test.jsonl --out mauve.json
"""


def _common(p: argparse.ArgumentParser, model: bool = True) -> None:
    if model:
        p.add_argument("--model", required=True, help="SEDD or GPT-2: a directory (model or pysedd run) or a hub id")
        p.add_argument("--kind", choices=["sedd", "gpt2"], help="model kind (default: detected from its config / name)")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--table", help="also write the markdown table to this file")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--tokenizer", default="gpt2", help="GPT-2 BPE: gpt2 (bundled files), a directory or a hub id")
    p.add_argument("--no-resume", action="store_true", help="ignore and do not write the shard cache <out>.shards/")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _key_values(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UserError(f"{what} must look like NAME=PATH, got {item!r}")
        out[key] = value
    return out


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate models as in the paper (tables 1-6)", description=__doc__,
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(title="evaluations", metavar="<evaluation>", required=True)

    z = sub.add_parser("zero-shot", help="Table 1: zero-shot perplexity (SEDD: ELBO bound; GPT-2: exact)",
                       description="Perplexity on LAMBADA, WikiText-2, PTB, WikiText-103 and 1BW, packed like SEDD "
                       "(detokenised rows + EOS, non-overlapping chunks, no BOS); mean-then-exp and exp-then-mean.")
    _common(z)
    z.add_argument("--datasets", nargs="+", default=["lambada", "wikitext2", "ptb", "wikitext103", "lm1b"],
                   help="datasets (default: all five)")
    z.add_argument("--data-file", action="append", metavar="NAME=PATH",
                   help="read NAME from a local file in the hub dataset's format instead of the hub (repeatable)")
    z.add_argument("--data", metavar="DIR", help="a `pysedd prepare`d directory instead (its blocks are the chunks)")
    z.add_argument("--dataset-name", help="with --data: the dataset's name in the result (default: the directory name)")
    z.add_argument("--split", default="test", help="split (hub or --data) / label of local files (default test)")
    z.add_argument("--length", "--seq-len", action=Renamed, type=int, default=1024,
                   help="chunk length in tokens (default 1024)")
    z.add_argument("--mc-samples", "--n-samples", action=Renamed, type=int, default=ZERO_SHOT["mc_samples"],
                   help=f"SEDD: Monte-Carlo draws of t per chunk (default {ZERO_SHOT['mc_samples']})")
    z.add_argument("--sampling-eps", type=float, default=1e-3, help="SEDD: t is drawn in [eps, 1] (default 1e-3)")
    z.add_argument("--no-stratified", action="store_true", help="SEDD: i.i.d. instead of stratified t")
    z.add_argument("--seed", type=int, default=ZERO_SHOT["seed"])
    z.add_argument("--batch-size", type=int, default=ZERO_SHOT["batch_size"],
                   help="sequences per forward (SEDD: noised copies of a chunk, one per draw of t; GPT-2: chunks)")
    z.add_argument("--ar-first-token", choices=["skip", "eos"], default="skip",
                   help="GPT-2: skip each chunk's first token (default) or give it EOS as context (chunks of seq-len - 1)")
    z.add_argument("--limit", type=int, help="score only the first N chunks of each dataset (quick runs)")
    z.add_argument("--shard-size", type=int, default=8, help="chunks per resumable shard")
    z.add_argument("--chunking", choices=["concat", "sedd"], default="concat",
                   help="concat: all rows concatenated, one remainder dropped (default); sedd: exactly SEDD's data.py, "
                        "whose datasets map cuts 8 shards x 1000-row batches and drops a remainder per batch")
    z.set_defaults(func=run_zero_shot)

    h = sub.add_parser("lm-eval", help="Table 2: lm-evaluation-harness tasks (SEDD via its conditional ELBO)",
                       description="Runs lm-eval's simple_evaluate on lambada_openai, hellaswag, piqa, arc_easy, "
                       "arc_challenge and winogrande, from the hub by name or from local files (--local-data / --task-file).")
    _common(h)
    h.add_argument("--tasks", nargs="+", default=["lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge", "winogrande"])
    h.add_argument("--local-data", "--data-dir", action=Renamed, metavar="DIR",
                   help="local data of every task: DIR/<task>.jsonl in the built-in's fields, else the offline copies "
                   "in the layout of ../shared/data (lambada/lambada_test.jsonl, hellaswag/...)")
    h.add_argument("--task-file", action="append", metavar="TASK=PATH", help="a local data file for one task (repeatable)")
    h.add_argument("--mc-samples", "--n-samples", action=Renamed, type=int, default=LM_EVAL["mc_samples"],
                   help=f"SEDD: Monte-Carlo draws of t per request (default {LM_EVAL['mc_samples']})")
    h.add_argument("--seed", type=int, default=LM_EVAL["seed"], help="base seed (each request derives its own)")
    h.add_argument("--batch-size", type=int, default=LM_EVAL["batch_size"],
                   help="requests per batch, lm-eval's batch size (SEDD: at most batch-size x mc-batch-size rows per "
                   f"forward; default {LM_EVAL['batch_size']})")
    h.add_argument("--mc-batch-size", type=int, default=LM_EVAL["mc_batch_size"],
                   help=f"SEDD: MC draws of one request per forward (default {LM_EVAL['mc_batch_size']})")
    h.add_argument("--eos-framing", choices=["both", "none"], default=LM_EVAL["eos_framing"],
                   help="SEDD: 'both' scores [EOS]+context ++ continuation+[EOS] (default); 'none' scores context ++ "
                   "continuation, the framing lm-eval's hf model gives GPT-2")
    h.add_argument("--limit", type=float, help="documents per task (an int, or a fraction < 1)")
    h.add_argument("--num-fewshot", type=int, default=0)
    h.add_argument("--no-greedy", action="store_true", help="SEDD: skip the greedy pass (is_greedy=False everywhere)")
    h.add_argument("--bootstrap-iters", type=int, default=0, help="lm-eval stderr bootstrap iterations (default 0)")
    h.set_defaults(func=run_lm_eval)

    g = sub.add_parser("gen-ppl", help="Table 3: generative perplexity of samples under a judge, with entropy",
                       description="Scores the raw ids of samples.npz files with a judge AR model; modes (a) exp-then-mean, "
                       "(b) mean-then-exp (default), (c) retokenised token-weighted, (d) batch-level without EOS.")
    _common(g, model=False)
    g.add_argument("--samples", nargs="+", required=True, help="samples.npz files (one per sampler setting)")
    g.add_argument("--judge", default="gpt2-large", help="judge AR model: hub id or directory (default gpt2-large)")
    g.add_argument("--modes", nargs="+", default=["b", "a"], choices=["a", "b", "c", "d"], help="the first is the primary")
    g.add_argument("--batch-size", type=int, default=GEN_PPL["batch_size"], help="sequences per forward")
    g.add_argument("--min-entropy", type=float, default=0.0, help="mode (d): drop samples below this unigram entropy")
    g.add_argument("--limit", type=int, help="score only the first N samples of each file")
    g.set_defaults(func=run_gen_ppl)

    d = sub.add_parser("diversity", help="Table 4: unique unigrams, entropy, repetition rate, distinct-n",
                       description="Per-sample diversity of samples.npz files and of training data, mean ± std.")
    _common(d, model=False)
    d.add_argument("--samples", nargs="*", default=[], help="samples.npz files")
    d.add_argument("--reference", "--data", action=Renamed, nargs="*", default=[],
                   help="real text to compare with: prepared dataset directories or text/jsonl files")
    d.add_argument("--split", default="train", help="split of prepared reference directories (default train)")
    d.add_argument("--reference-limit", type=int, help="blocks of reference data (default: as many as the largest sample set)")
    d.add_argument("--length", type=int, help="reference block length (default: the samples' length, else 1024)")
    d.add_argument("--window", type=int, default=DIVERSITY["window"],
                   help=f"repetition window (default {DIVERSITY['window']})")
    d.add_argument("--repetition-ngram", type=int, default=DIVERSITY["repetition_ngram"],
                   help="n of the paper's repetition column: n-grams seen in the window (default "
                   f"{DIVERSITY['repetition_ngram']}; the literal single-token reading is always reported beside it)")
    d.add_argument("--distinct-n", type=int, nargs="*", default=[], help="also corpus distinct-n for these n")
    d.set_defaults(func=run_diversity)

    m = sub.add_parser("mauve", help="Tables 5-6: MAUVE and continuation perplexity of prompted generation",
                       description="Prompts from held-out text, continuations from the model (or --samples), judge "
                       "features, MAUVE mean ± std over seeds with a fixed bucket count, continuation perplexity.")
    _common(m, model=False)
    m.add_argument("--model", help="generator (SEDD or GPT-2); or give --samples")
    m.add_argument("--kind", choices=["sedd", "gpt2"])
    m.add_argument("--samples", help="pre-generated samples.npz whose rows start with the prompts")
    m.add_argument("--prompts", "--references", action=Renamed, required=True,
                   help="held-out documents: .jsonl with a text (or token 'ids') field, or .txt")
    m.add_argument("--field", default="text")
    m.add_argument("--judge", default="gpt2-large", help="featurizer and perplexity judge (default gpt2-large)")
    m.add_argument("--prompt-len", type=int, default=MAUVE["prompt_len"])
    m.add_argument("--gen-len", type=int, default=MAUVE["gen_len"])
    m.add_argument("--canvas", type=int, default=MAUVE["canvas"], help="SEDD canvas: 100 (gen-100) or 1024 (gen-1024)")
    m.add_argument("--steps", type=int, default=MAUVE["steps"], help=f"SEDD sampling steps (default {MAUVE['steps']})")
    m.add_argument("--categorical", choices=CATEGORICAL, default=CATEGORICAL[0],
                   help="SEDD's categorical draw: float64 (default, the exact law) or reference (the official "
                   "sampler's float32 Gumbel-max, which the paper's numbers come from)")
    m.add_argument("--num-prompts", "--n-prompts", action=Renamed, type=int, default=MAUVE["num_prompts"],
                   help=f"prompts used (default {MAUVE['num_prompts']})")
    m.add_argument("--samples-per-prompt", type=int, default=1,
                   help="continuations per prompt; row i continues prompt i mod n-prompts (as pysedd sample writes them)")
    m.add_argument("--seed", type=int, default=MAUVE["seed"], help="generation seed")
    m.add_argument("--mauve-seeds", "--seeds", action=Renamed, type=int, nargs="+", default=MAUVE["mauve_seeds"],
                   help="k-means seeds MAUVE is averaged over")
    m.add_argument("--num-buckets", type=int, help="k-means buckets (default mauve-text's 'auto', max(2, round(n/10)), recorded)")
    m.add_argument("--features", choices=["text", "ids"], default=MAUVE["features"],
                   help="text (default, the paper): decoded text featurised by mauve-text itself with the judge, truncated "
                   "to --max-text-length tokens; ids: the judge's features of the raw token ids")
    m.add_argument("--max-text-length", type=int, default=MAUVE["max_text_length"],
                   help=f"text features: tokens kept per text (default {MAUVE['max_text_length']})")
    m.add_argument("--batch-size", type=int, default=MAUVE["batch_size"], help="sequences per forward")
    m.set_defaults(func=run_mauve)


# -- runners ----------------------------------------------------------------------------------------------------------

def _device(args) -> str:
    from ..eval.common import default_device

    return args.device or default_device()


def _at_least(args, low: int, *names: str) -> None:
    """Each named option, when given, is an integer >= low."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def _draws(paths: list[str], loaded: list[tuple]) -> dict:
    """Which categorical draw made each sample file (`pysedd sample --categorical`; None for GPT-2's samples), from
    the (samples, meta, fingerprint) triples `load_samples` returned."""
    return {path: meta.get("categorical") for path, (_, meta, _) in zip(paths, loaded)}


def _model_info(lm) -> dict:
    return {"kind": lm.kind, "source": lm.source, "fingerprint": lm.fingerprint, "max_length": lm.max_length, **lm.extra}


def _finish(args, result: dict, table: str) -> int:
    from ..eval.common import write_result

    write_result(result, args.out, table, args.table)
    print(table)
    print(f"wrote {args.out}" + (f" and {args.table}" if args.table else ""))
    return 0


def run_zero_shot(args) -> int:
    from ..eval import zero_shot
    from ..eval.common import load_model
    from ..tokenizer import get_tokenizer

    require_output_files(args, "out", "table")
    files = _key_values(args.data_file, "--data-file")
    unknown = sorted(set(files) - set(args.datasets))
    if unknown:
        raise UserError(f"--data-file names dataset(s) not in --datasets: {', '.join(unknown)}")
    settings = zero_shot.ZeroShotSettings(seq_len=args.length, split=args.split, n_samples=args.mc_samples,
                                          sampling_eps=args.sampling_eps, stratified=not args.no_stratified, seed=args.seed,
                                          batch_size=args.batch_size, ar_first_token=args.ar_first_token,
                                          limit=args.limit, shard_size=args.shard_size, chunking=args.chunking)
    if args.data and files:
        raise UserError("give either --data (a prepared directory) or --data-file, not both")
    if not args.data:  # name an unknown dataset before anything else is checked or loaded
        from ..data.corpora import canonical_name

        for name in args.datasets:
            canonical_name(name)
    if args.data:
        from ..data import read_manifest

        manifest = read_manifest(args.data)
        if manifest is None:
            raise UserError(f"--data {args.data} is not a prepared dataset directory (no valid manifest.json)")
        settings.seq_len = manifest["seq_len"]
        names = [args.dataset_name or Path(args.data).name]
    else:
        names = args.datasets
    lm = load_model(args.model, args.kind, _device(args))
    tokenizer = get_tokenizer(args.tokenizer)
    datasets = {}
    for name in names:
        datasets[name] = zero_shot.evaluate_dataset(lm, name, [files[name]] if name in files else [], settings, tokenizer,
                                                    args.out, resume=not args.no_resume, progress=not args.quiet,
                                                    prepared_dir=args.data)
    result = {"evaluation": "zero-shot", "model": _model_info(lm), "tokenizer": tokenizer.fingerprint,
              "settings": dataclasses.asdict(settings), "scoring": zero_shot.scoring_note(lm.kind, settings),
              "protocol": zero_shot.protocol(lm.kind, settings), "datasets": datasets}
    result["record"] = records.record("zero-shot", [records.ZeroShot(
        n, d["metrics"]["mean_then_exp"], d["metrics"]["exp_then_mean"], d["metrics"]["bound"]) for n, d in datasets.items()])
    return _finish(args, result, zero_shot.table([result]))


def run_lm_eval(args) -> int:
    from ..eval import harness
    from ..eval.common import load_model, settings_hash
    from ..eval.local_tasks import DEFAULT_FILES, check_task

    require_output_files(args, "out", "table")
    files = _key_values(args.task_file, "--task-file")
    for task in [*args.tasks, *files]:
        check_task(task)
    if args.local_data:
        root = Path(args.local_data)
        if not root.is_dir():
            raise UserError(f"--local-data {root} is not a directory")
        found = {t: root / f"{t}.jsonl" if (root / f"{t}.jsonl").is_file() else root / DEFAULT_FILES[t] for t in args.tasks}
        files = {**{t: str(p) for t, p in found.items()}, **files}
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    lm = load_model(args.model, args.kind, _device(args))
    shards = Path(str(args.out) + ".shards")
    _at_least(args, 1, "batch_size", "mc_batch_size", "mc_samples")
    settings = {"tasks": args.tasks, "n_samples": args.mc_samples, "seed": args.seed, "batch_size": args.batch_size,
                "limit": limit, "num_fewshot": args.num_fewshot, "greedy": not args.no_greedy,
                "bootstrap_iters": args.bootstrap_iters, "mc_batch_size": args.mc_batch_size,
                "eos_framing": args.eos_framing}
    cache = None
    if not args.no_resume:  # pysedd's JSON request cache: a rerun skips every request already answered
        cache = str(shards / f"requests-{settings_hash({**settings, 'model': lm.fingerprint})}")
    out = harness.run_lm_eval(lm, args.tasks, data_files=files, cache_dir=str(shards / "tasks"),
                              n_samples=args.mc_samples, seed=args.seed, batch_size=args.batch_size,
                              mc_batch_size=args.mc_batch_size, limit=limit, num_fewshot=args.num_fewshot,
                              greedy=not args.no_greedy, eos_framing=args.eos_framing,
                              bootstrap_iters=args.bootstrap_iters, request_cache=cache)
    metrics = harness.task_metrics(out["lm_eval"])
    pysedd_info = {"evaluation": "lm-eval", "model": _model_info(lm), "settings": settings, "tasks": out["tasks"],
                   "metrics": metrics, "likelihood": out["protocol"]["likelihood"], "protocol": out["protocol"]}
    result = {**out["lm_eval"], "pysedd": pysedd_info}
    result["record"] = records.record("lm-eval", [records.LmEval(lm.source, {
        t: {k: float(v) for k, v in m.items() if k in ("acc", "acc_norm", "perplexity") and v is not None}
        for t, m in metrics.items()})])
    return _finish(args, result, harness.table([(lm.source, metrics)]))


def run_gen_ppl(args) -> int:
    from ..eval import gen_ppl
    from ..eval.common import load_model, load_samples, setting_name
    from ..tokenizer import get_tokenizer

    require_output_files(args, "out", "table")
    _at_least(args, 1, "batch_size", "limit")
    settings = gen_ppl.GenPPLSettings(modes=tuple(args.modes), batch_size=args.batch_size,
                                      min_entropy=args.min_entropy, limit=args.limit)
    inputs = [load_samples(path) for path in args.samples]
    judge = load_model(args.judge, "gpt2", _device(args))
    tokenizer = get_tokenizer(args.tokenizer)
    results = [gen_ppl.evaluate_samples(judge, s, meta, fp, settings, tokenizer, args.out, resume=not args.no_resume,
                                        progress=not args.quiet) for s, meta, fp in inputs]
    protocol = {**gen_ppl.protocol(settings), "categorical": _draws(args.samples, inputs)}
    result = {"evaluation": "gen-ppl", "judge": _model_info(judge), "settings": dataclasses.asdict(settings),
              "modes": {m: gen_ppl.MODE_NAMES[m] for m in settings.modes}, "protocol": protocol,
              "results": {path: r for path, r in zip(args.samples, results)}}
    result["record"] = records.record("gen-ppl", [records.GenPPL(
        setting_name(r["samples"]["meta"], path), r["gen_ppl"], r["primary_mode"], records.stat(r["unigram_entropy"]))
        for path, r in zip(args.samples, results)])
    return _finish(args, result, gen_ppl.table(results, settings))


def run_diversity(args) -> int:
    from ..eval import diversity
    from ..eval.common import load_samples, load_token_blocks, setting_name

    require_output_files(args, "out", "table")
    if not args.samples and not args.reference:
        raise UserError("give --samples and/or --reference")
    _at_least(args, 1, "window", "reference_limit", "length", "repetition_ngram")
    if any(n < 1 for n in args.distinct_n):
        raise UserError(f"--distinct-n must be >= 1, got {' '.join(map(str, args.distinct_n))}")
    rows, entries = [], {}
    sample_sets = [load_samples(path) for path in args.samples]
    for (samples, meta, fp), path in zip(sample_sets, args.samples):
        metrics = diversity.diversity(samples, args.distinct_n, args.window, args.repetition_ngram)
        name = setting_name(meta, Path(path).name)
        rows.append((name, metrics))
        entries[path] = {"name": name, "kind": "samples", "source": {**fp, "meta": meta}, "metrics": metrics}
    length = args.length or (sample_sets[0][0].shape[1] if sample_sets else None)  # None: the data's own block length
    limit = args.reference_limit or (max(len(s[0]) for s in sample_sets) if sample_sets else None)
    if args.reference:
        from ..tokenizer import get_tokenizer

        tokenizer = get_tokenizer(args.tokenizer)
        for ref in args.reference:
            blocks, info = load_token_blocks(ref, length, limit, tokenizer, args.split)
            metrics = diversity.diversity(blocks, args.distinct_n, args.window, args.repetition_ngram)
            name = f"data: {Path(ref).name}"
            rows.append((name, metrics))
            entries[ref] = {"name": name, "kind": "reference", "source": info, "metrics": metrics}
    result = {"evaluation": "diversity", "settings": {"window": args.window, "distinct_n": args.distinct_n,
                                                      "reference_length": length, "reference_limit": limit,
                                                      "reference_split": args.split,
                                                      "repetition_ngram": args.repetition_ngram},
              "protocol": {**diversity.protocol(args.window, args.repetition_ngram),
                           "categorical": _draws(args.samples, sample_sets)},
              "results": entries}
    result["record"] = records.record("diversity", [records.Diversity(
        name, records.stat(m["unique_unigram_fraction"]), records.stat(m["unigram_entropy"]),
        records.stat(m[f"repetition_rate_{args.window}_{args.repetition_ngram}gram"]),
        records.stat(m[f"repetition_rate_{args.window}"]), args.window, args.repetition_ngram) for name, m in rows])
    return _finish(args, result, diversity.table(rows, args.window, args.repetition_ngram))


def run_mauve(args) -> int:
    from ..eval import mauve_eval
    from ..eval.common import load_model, load_samples, setting_name
    from ..tokenizer import get_tokenizer

    require_output_files(args, "out", "table")
    if (args.model is None) == (args.samples is None):
        raise UserError("give exactly one of --model (generate here) or --samples (pre-generated)")
    _at_least(args, 1, "max_text_length", "num_buckets", "batch_size", "num_prompts", "samples_per_prompt", "steps")
    settings = mauve_eval.MauveSettings(prompt_len=args.prompt_len, gen_len=args.gen_len, canvas=args.canvas,
                                        n_prompts=args.num_prompts, samples_per_prompt=args.samples_per_prompt,
                                        seed=args.seed, mauve_seeds=tuple(args.mauve_seeds), num_buckets=args.num_buckets,
                                        steps=args.steps, batch_size=args.batch_size, field=args.field,
                                        features=args.features, max_text_length=args.max_text_length,
                                        categorical=args.categorical)
    tokenizer = get_tokenizer(args.tokenizer)
    refs, prompt_info = mauve_eval.load_prompts(args.prompts, settings, tokenizer)
    device = _device(args)
    lm = load_model(args.model, args.kind, device) if args.model else None
    samples, sample_info = None, None
    if args.samples:
        samples, meta, fp = load_samples(args.samples)
        sample_info = {**fp, "meta": meta}
        made = meta.get("prompts") or {}
        for key, ours in (("prompt_len", settings.prompt_len), ("gen_len", settings.gen_len)):
            if made.get(key) not in (None, ours):
                raise UserError(f"{args.samples} was sampled with {key} {made[key]}, not {ours}")
    judge = load_model(args.judge, "gpt2", device)
    metrics = mauve_eval.evaluate(lm, judge, refs, settings, args.out, samples=samples, resume=not args.no_resume,
                                  progress=not args.quiet, tokenizer=tokenizer)
    if lm is not None:
        metrics["protocol"]["categorical"] = settings.categorical if lm.kind == "sedd" else None
        setting = f"gen-{settings.canvas}" if lm.kind == "sedd" else "AR"
        name = f"{lm.source} ({setting})"
    else:  # from the samples' own record
        metrics["protocol"]["categorical"] = meta.get("categorical")
        canvas = (meta.get("prompts") or {}).get("canvas")
        setting = f"gen-{canvas}" if meta.get("kind") == "sedd" and canvas else "AR" if meta.get("kind") == "gpt2" else "samples"
        name = f"{setting_name(meta, Path(args.samples).name)} ({setting})"
    result = {"evaluation": "mauve", "model": _model_info(lm) if lm else None, "samples": sample_info,
              "judge": _model_info(judge), "prompts": prompt_info, "settings": dataclasses.asdict(settings),
              "setting": setting, **metrics}
    result["record"] = records.record("mauve", [records.Mauve(name, setting, records.stat(metrics["mauve"]),
                                                              metrics["continuation_ppl"]["mean_then_exp"])])
    return _finish(args, result, mauve_eval.table([(name, metrics)]))
