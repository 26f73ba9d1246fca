"""Every evaluation of the paper: zero-shot perplexity (Table 1), lm-eval tasks (Table 2), generative perplexity
(Table 3), diversity (Table 4), MAUVE and continuation perplexity (Tables 5-6) and latency (Figure 1).
Each writes a JSON result (the report reads these) and a markdown table."""


rule zero_shot:
    input:
        stale_check=force_stale,
        model=lambda wc: model_input(wc.model),
        data=lambda wc: f"{zero_shot_data(wc.dataset)[0]}/manifest.json",
    output:
        json=f"{RESULTS}/eval/zero-shot/{{model}}/{{dataset}}.json",
        table=f"{RESULTS}/eval/zero-shot/{{model}}/{{dataset}}.md",
    params:
        model=lambda wc: model_path(wc.model),
        kind=lambda wc: MODELS[wc.model]["kind"],
        split=lambda wc: zero_shot_data(wc.dataset)[1],
        options=canon(config["zero_shot"]["options"]),
        args=flags(config["zero_shot"]["options"]),
        code=CODE["zero_shot"],
    log:
        f"{RESULTS}/logs/eval/zero-shot/{{model}}/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/zero-shot/{{model}}/{{dataset}}.tsv"
    threads: gpu_threads()
    resources:
        mem_mb=8000,
        runtime=runtime_of("zero_shot"),
        gpu=config["gpus_per_job"],
    shell:
        "{PYSEDD} eval zero-shot --model {params.model} --kind {params.kind} --data $(dirname {input.data}) "
        "--split {params.split} --dataset-name {wildcards.dataset} {params.args} "
        "--out {output.json} --table {output.table} > {log} 2>&1"


rule lm_eval:
    input:
        stale_check=force_stale,
        model=lambda wc: model_input(wc.model),
        data=lm_eval_data,
    output:
        json=f"{RESULTS}/eval/lm-eval/{{model}}.json",
        table=f"{RESULTS}/eval/lm-eval/{{model}}.md",
    params:
        model=lambda wc: model_path(wc.model),
        kind=lambda wc: MODELS[wc.model]["kind"],
        tasks=config["lm_eval"]["tasks"],
        data=lambda wc, input: f"--local-data {input.data}" if input.data else "",
        options=lambda wc: canon(lm_eval_options(wc.model)),
        args=lambda wc: flags(lm_eval_options(wc.model)),
        code=CODE["lm_eval"],
    log:
        f"{RESULTS}/logs/eval/lm-eval/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/lm-eval/{{model}}.tsv"
    threads: gpu_threads()
    resources:
        mem_mb=16000,
        runtime=runtime_of("lm_eval"),
        gpu=config["gpus_per_job"],
    shell:
        "{PYSEDD} eval lm-eval --model {params.model} --kind {params.kind} --tasks {params.tasks} {params.data} "
        "{params.args} --out {output.json} --table {output.table} > {log} 2>&1"


rule gen_ppl:
    input:
        stale_check=force_stale,
        samples=rules.sample.output,
        judge=model_input(JUDGE),
    output:
        json=f"{RESULTS}/eval/gen-ppl/{{model}}/{{setting}}.json",
        table=f"{RESULTS}/eval/gen-ppl/{{model}}/{{setting}}.md",
    params:
        judge=judge_path(),
        options=canon(config["gen_ppl"]),
        args=flags(config["gen_ppl"]),
        code=CODE["gen_ppl"],
    log:
        f"{RESULTS}/logs/eval/gen-ppl/{{model}}/{{setting}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/gen-ppl/{{model}}/{{setting}}.tsv"
    threads: gpu_threads()
    resources:
        mem_mb=8000,
        runtime=runtime_of("gen_ppl"),
        gpu=config["gpus_per_job"],
    shell:
        "{PYSEDD} eval gen-ppl --samples {input.samples} --judge {params.judge} {params.args} "
        "--out {output.json} --table {output.table} > {log} 2>&1"


rule diversity:
    input:
        stale_check=force_stale,
        samples=rules.sample.output,
    output:
        json=f"{RESULTS}/eval/diversity/{{model}}/{{setting}}.json",
        table=f"{RESULTS}/eval/diversity/{{model}}/{{setting}}.md",
    params:
        options=canon(diversity_options()),
        args=flags(diversity_options()),
        code=CODE["diversity"],
    log:
        f"{RESULTS}/logs/eval/diversity/{{model}}/{{setting}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/diversity/{{model}}/{{setting}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=runtime_of("diversity"),
    shell:
        "{PYSEDD} eval diversity --samples {input.samples} {params.args} "
        "--out {output.json} --table {output.table} > {log} 2>&1"


rule diversity_data:
    """The diversity of real text (held-out or a zero-shot corpus), the row the samples are compared with."""
    input:
        stale_check=force_stale,
        manifest=lambda wc: f"{diversity_reference()[0]}/manifest.json",
    output:
        json=f"{RESULTS}/eval/diversity/data/{{reference}}.json",
        table=f"{RESULTS}/eval/diversity/data/{{reference}}.md",
    params:
        split=lambda wc: diversity_reference()[1],
        options=canon(config["diversity"]),
        args=flags(diversity_options()),
        code=CODE["diversity"],
    log:
        f"{RESULTS}/logs/eval/diversity/data-{{reference}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/diversity/data-{{reference}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=runtime_of("diversity_data"),
    shell:
        "{PYSEDD} eval diversity --reference $(dirname {input.manifest}) --split {params.split} {params.args} "
        "--out {output.json} --table {output.table} > {log} 2>&1"


rule mauve:
    input:
        stale_check=force_stale,
        samples=rules.sample_conditional.output,
        references=rules.prompts.output,
        judge=model_input(JUDGE),
    output:
        json=f"{RESULTS}/eval/mauve/{{model}}/{{setting}}.json",
        table=f"{RESULTS}/eval/mauve/{{model}}/{{setting}}.md",
    params:
        judge=judge_path(),
        options=lambda wc: canon(mauve_options()),
        args=lambda wc: flags(mauve_options()),
        code=CODE["mauve"],
    log:
        f"{RESULTS}/logs/eval/mauve/{{model}}/{{setting}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/mauve/{{model}}/{{setting}}.tsv"
    threads: gpu_threads()
    resources:
        mem_mb=8000,
        runtime=runtime_of("mauve"),
        gpu=config["gpus_per_job"],
    shell:
        "{PYSEDD} eval mauve --samples {input.samples} --prompts {input.references} --judge {params.judge} "
        "{params.args} --out {output.json} --table {output.table} > {log} 2>&1"


rule latency:
    input:
        stale_check=force_stale,
        sedd=latency_model("sedd")[1],
        gpt2=latency_model("gpt2")[1],
    output:
        json=f"{RESULTS}/bench/latency.json",
        table=f"{RESULTS}/bench/latency.md",
        plot=report(
            f"{RESULTS}/bench/latency.png",
            caption="../report/latency.rst",
            category="Figure 1: latency",
        ),
    params:
        sedd=latency_model("sedd")[0],
        gpt2=latency_model("gpt2")[0],
        options=canon(latency_options()),
        args=flags(latency_options()),
        code=CODE["latency"],
    log:
        f"{RESULTS}/logs/bench/latency.log",
    benchmark:
        f"{RESULTS}/benchmarks/bench/latency.tsv"
    threads: gpu_threads()
    resources:
        mem_mb=8000,
        runtime=runtime_of("latency"),
        gpu=config["gpus_per_job"],
    shell:
        "{PYSEDD} bench latency --sedd {params.sedd} --gpt2 {params.gpt2} {params.args} "
        "--out {output.json} --table {output.table} --plot {output.plot} > {log} 2>&1"
