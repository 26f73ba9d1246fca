"""Real text scored like samples: Table 3's OpenWebText row is the judge's perplexity of `real_text.num_sequences`
real `seq_len`-token sequences, and Table 4's real-text row their diversity (diversity.reference: <real_text.name>).
Only when the config has a `real_text` entry."""


def real_text_spec():
    return {k: v for k, v in config["real_text"].items() if k not in ("name", "num_sequences")}


rule prepare_real_text:
    input:
        stale_check=force_stale,
        local=lambda wc: local_files(real_text_spec()),
    output:
        manifest=f"{RESULTS}/data/real/{{name}}/manifest.json",
    params:
        corpus=lambda wc: canon(real_text_spec()),
        seq_len=config["seq_len"],
        tokenizer=config["tokenizer"],
        code=CODE["prepare"],
        args=lambda wc: prepare_args(real_text_spec()),
    log:
        f"{RESULTS}/logs/data/real-{{name}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/real-{{name}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=runtime_of("prepare_real_text"),
    shell:
        "{PYSEDD} prepare {params.args} --split-name test --tokenizer {params.tokenizer} --length {params.seq_len} "
        "--out $(dirname {output.manifest}) --force > {log} 2>&1"


rule real_text_samples:
    """The first num_sequences blocks of the real text as a samples file (the format `pysedd sample` writes)."""
    input:
        stale_check=force_stale,
        manifest=rules.prepare_real_text.output.manifest,
    output:
        f"{RESULTS}/samples/data/{{name}}.npz",
    params:
        n=lambda wc: config["real_text"]["num_sequences"],
        code=CODE["real_text_samples"],
    log:
        f"{RESULTS}/logs/data/real-{{name}}-samples.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=runtime_of("real_text_samples"),
    run:
        import numpy as np
        from pysedd.eval.common import load_token_blocks

        blocks, info = load_token_blocks(os.path.dirname(input.manifest), None, params.n, split="test")
        if len(blocks) < params.n:
            raise ValueError(f"real_text {wildcards.name}: {len(blocks)} blocks, fewer than num_sequences {params.n}")
        meta = {"name": f"data: {wildcards.name}", "kind": "data", "source": info}
        tmp = output[0] + ".tmp.npz"
        np.savez(tmp, samples=blocks.astype(np.int64), meta=np.array(json.dumps(meta)))
        os.replace(tmp, output[0])
        with open(log[0], "w") as f:
            print(f"{len(blocks)} x {blocks.shape[1]} tokens", file=f)


rule gen_ppl_real:
    input:
        stale_check=force_stale,
        samples=rules.real_text_samples.output,
        judge=model_input(JUDGE),
    output:
        json=f"{RESULTS}/eval/gen-ppl/data/{{name}}.json",
        table=f"{RESULTS}/eval/gen-ppl/data/{{name}}.md",
    params:
        judge=judge_path(),
        options=canon(config["gen_ppl"]),
        args=flags(config["gen_ppl"]),
        code=CODE["gen_ppl"],
    log:
        f"{RESULTS}/logs/eval/gen-ppl/data-{{name}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/gen-ppl/data-{{name}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=runtime_of("gen_ppl"),
        gpu=config["gpus_per_job"],
    shell:
        "{PYSEDD} eval gen-ppl --samples {input.samples} --judge {params.judge} {params.args} "
        "--out {output.json} --table {output.table} > {log} 2>&1"
