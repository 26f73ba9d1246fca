"""Tokenisation: the training corpus (with its held-out split) and every zero-shot evaluation corpus, GPT-2 BPE,
packed into blocks by `pysedd prepare`; plus the local lm-eval task files and MAUVE prompts made from held-out text."""


rule prepare_train:
    input:
        local=local_files(config["data"]),
    output:
        manifest=f"{RESULTS}/data/train/manifest.json",
    params:
        corpus=canon(config["data"]),
        seq_len=config["seq_len"],
        tokenizer=config["tokenizer"],
        code=CODE["prepare"],
        args=lambda wc: prepare_args(config["data"]),
    log:
        f"{RESULTS}/logs/data/train.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/train.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=runtime_of("prepare_train"),
    shell:
        "{PYSEDD} prepare {params.args} --tokenizer {params.tokenizer} --length {params.seq_len} "
        "--out $(dirname {output.manifest}) --force > {log} 2>&1"


rule prepare_eval:
    input:
        local=lambda wc: local_files(config["zero_shot"]["datasets"][wc.dataset]),
    output:
        manifest=f"{RESULTS}/data/eval/{{dataset}}/manifest.json",
    params:
        corpus=lambda wc: canon(config["zero_shot"]["datasets"][wc.dataset]),
        seq_len=config["seq_len"],
        tokenizer=config["tokenizer"],
        code=CODE["prepare"],
        args=lambda wc: prepare_args(config["zero_shot"]["datasets"][wc.dataset]),
    log:
        f"{RESULTS}/logs/data/eval-{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/eval-{{dataset}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=runtime_of("prepare_eval"),
    shell:
        "{PYSEDD} prepare {params.args} --split-name test --tokenizer {params.tokenizer} "
        "--length {params.seq_len} --out $(dirname {output.manifest}) --force > {log} 2>&1"


rule heldout_tasks:
    """lm-eval task files in the built-in tasks' own formats, cut from held-out documents of the training corpus."""
    input:
        stale_check=force_stale,
        manifest=rules.prepare_train.output.manifest,
    output:
        directory(f"{RESULTS}/data/lm-eval"),
    params:
        tasks=config["lm_eval"]["tasks"],
        docs=config["lm_eval"]["heldout_docs"],
        tokenizer=config["tokenizer"],
        seed=config["lm_eval"]["options"]["seed"],
        code=CODE["heldout_tasks"],
    log:
        f"{RESULTS}/logs/data/lm-eval-tasks.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/lm-eval-tasks.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=runtime_of("heldout_tasks"),
    script:
        "../scripts/heldout_tasks.py"


rule prompts:
    """MAUVE prompts and references: documents of held-out text (or a configured file) as {"text": ...} lines."""
    input:
        stale_check=force_stale,
        manifest=lambda wc: rules.prepare_train.output.manifest if config["mauve"]["prompts"]["source"] == "heldout" else [],
        file=lambda wc: [config["mauve"]["prompts"]["path"]] if config["mauve"]["prompts"]["source"] == "file" else [],
    output:
        f"{RESULTS}/data/prompts.jsonl",
    params:
        prompts=canon(config["mauve"]["prompts"]),
        length=config["mauve"]["prompt_len"] + config["mauve"]["gen_len"],
        tokenizer=config["tokenizer"],
        code=CODE["prompts"],
    log:
        f"{RESULTS}/logs/data/prompts.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/prompts.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=runtime_of("prompts"),
    script:
        "../scripts/prompts.py"
