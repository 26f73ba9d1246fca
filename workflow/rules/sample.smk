"""Sampling: unconditional samples (SEDD at several step counts, GPT-2 ancestral and nucleus) for gen-PPL and
diversity, and prompted continuations (SEDD on each canvas, GPT-2 causal) for MAUVE."""


rule sample:
    input:
        stale_check=force_stale,
        model=lambda wc: model_input(wc.model),
    output:
        f"{RESULTS}/samples/{{model}}/{{setting}}.npz",
    params:
        model=lambda wc: model_path(wc.model),
        kind=lambda wc: MODELS[wc.model]["kind"],
        options=lambda wc: canon(sampling_options(wc.model, wc.setting)),
        args=lambda wc: flags(sampling_options(wc.model, wc.setting)),
        code=CODE["sample"],
    log:
        f"{RESULTS}/logs/sample/{{model}}/{{setting}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sample/{{model}}/{{setting}}.tsv"
    threads: gpu_threads()
    resources:
        mem_mb=8000,
        runtime=runtime_of("sample"),
        gpu=config["gpus_per_job"],
    shell:
        "{PYSEDD} sample --model {params.model} --kind {params.kind} {params.args} --out {output} > {log} 2>&1"


rule sample_conditional:
    input:
        stale_check=force_stale,
        model=lambda wc: model_input(wc.model),
        prompts=rules.prompts.output,
    output:
        f"{RESULTS}/samples-conditional/{{model}}/{{setting}}.npz",
    params:
        model=lambda wc: model_path(wc.model),
        kind=lambda wc: MODELS[wc.model]["kind"],
        options=lambda wc: canon(conditional_options(wc.model, wc.setting)),
        args=lambda wc: flags(conditional_options(wc.model, wc.setting)),
        code=CODE["sample"],
    log:
        f"{RESULTS}/logs/sample-conditional/{{model}}/{{setting}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/sample-conditional/{{model}}/{{setting}}.tsv"
    threads: gpu_threads()
    resources:
        mem_mb=8000,
        runtime=runtime_of("sample_conditional"),
        gpu=config["gpus_per_job"],
    shell:
        "{PYSEDD} sample --model {params.model} --kind {params.kind} --prompts {input.prompts} {params.args} "
        "--out {output} > {log} 2>&1"
