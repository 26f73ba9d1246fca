"""Every default the CLI and the workflow share, in one place: `pysedd` flags read them here and
tests/test_cli_vocabulary.py checks that workflow/schemas/config.schema.yaml states the same values.

The paper-related settings take the paper's values (Deschenaux & Gulcehre 2024, see docs/evaluation-protocol.md):
MAUVE on 1000 prompts with 1024 SEDD steps, 1024 unconditional samples of 1024 tokens, latency over 20 repeats of
batch 1 x 1024 tokens. Batch sizes are throughput settings only (results do not depend on them)."""

# SEDD's categorical draw (`--categorical` of sample, eval mauve and bench frontier; pysedd.ops.categorical): the first
# is the default, the exact law; "reference" is the official sampler's float32 draw (docs/sampling.md).
CATEGORICAL = ("float64", "reference")

# `pysedd eval zero-shot` / config `zero_shot.options`: K = 128 stratified draws of t per chunk
# (docs/evaluation-protocol.md: enough that the Monte-Carlo noise is small against the gaps the table reports).
ZERO_SHOT = dict(mc_samples=128, batch_size=8, seed=0)

# `pysedd eval lm-eval` / config `lm_eval.options`: 256 draws of t per request (the paper's wrapper used 1024).
LM_EVAL = dict(mc_samples=256, batch_size=8, seed=0, mc_batch_size=16, eos_framing="both")

# `pysedd sample` / config `unconditional`: the paper's Table 3-4 sample sets.
UNCONDITIONAL = dict(num_samples=1024, length=1024, batch_size=8, seed=0, sampler="analytic", steps=1024)

# `pysedd eval gen-ppl` / config `gen_ppl`.
GEN_PPL = dict(batch_size=8)

# `pysedd eval diversity` / config `diversity`: repetition rate over a 100-token window.
DIVERSITY = dict(window=100, repetition_ngram=3)

# `pysedd eval mauve` / config `mauve`: the paper's 1000 prompts of 50 tokens, 50-token continuations, 1024 SEDD
# steps, MAUVE averaged over 5 k-means seeds.
# Features: mauve-text's own featurisation of the decoded text, truncated to 100 tokens (the paper's protocol).
MAUVE = dict(num_prompts=1000, prompt_len=50, gen_len=50, canvas=100, sampler="analytic", steps=1024, batch_size=8,
             seed=0, mauve_seeds=[1, 2, 3, 4, 5], features="text", max_text_length=100)

# `pysedd bench latency` / config `latency`: Table 7's shape (batch 1, 1024 tokens, 20 timed repeats); the models
# default to the random-weight `tiny` presets so that the command runs anywhere.
LATENCY = dict(steps=[64, 128, 256, 512, 1024], batch_size=1, length=1024, repeats=20, warmup=2, sampler="analytic",
               fhs=False, seed=0)

# The workflow's config takes these where it leaves a key out (workflow/rules/common.smk fills them in after the
# schema check, and `pysedd report --plan` reads them): dotted config key -> value. The schema states no default of
# its own for these keys, so the CLI and the workflow cannot drift apart.
ANCESTRAL = {"ancestral": {"top_k": 0}}  # GPT-2's sampling settings when none are configured
WORKFLOW = {
    **{f"zero_shot.options.{k}": ZERO_SHOT[k] for k in ("mc_samples", "batch_size", "seed")},
    **{f"lm_eval.options.{k}": LM_EVAL[k] for k in ("mc_samples", "batch_size", "seed", "eos_framing")},
    **{f"unconditional.{k}": UNCONDITIONAL[k] for k in ("num_samples", "length", "batch_size", "seed")},
    "unconditional.sedd.sampler": UNCONDITIONAL["sampler"],
    "unconditional.sedd.steps": [UNCONDITIONAL["steps"]],
    "unconditional.gpt2": ANCESTRAL,
    "gen_ppl.batch_size": GEN_PPL["batch_size"],
    **{f"diversity.{k}": DIVERSITY[k] for k in ("window", "repetition_ngram")},
    "mauve.prompts.num_prompts": MAUVE["num_prompts"],
    "mauve.seeds": MAUVE["mauve_seeds"],
    **{f"mauve.{k}": MAUVE[k] for k in ("prompt_len", "gen_len", "sampler", "steps", "batch_size", "seed", "features",
                                        "max_text_length")},
    "mauve.gpt2": ANCESTRAL,
    "mauve.canvases": [100, 1024],  # the paper's gen-100 and gen-1024 columns
    "diversity.reference": "heldout",  # Table 4's real-text row: the training corpus's held-out split
    **{f"latency.{k}": v for k, v in LATENCY.items()},
}
