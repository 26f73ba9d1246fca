"""The report: the paper's tables 1-6 and the latency figure as results/report.md (pysedd report), and the same
tables as TSV files wrapped in report() so `snakemake --report report.html` shows them with captions."""

TABLES = {
    "table1-zero-shot": "Table 1: zero-shot perplexity",
    "table2-lm-eval": "Table 2: downstream tasks",
    "table3-gen-ppl": "Table 3: generative perplexity",
    "table4-diversity": "Table 4: diversity",
    "table5-mauve": "Table 5: MAUVE",
    "table6-continuation-ppl": "Table 6: continuation perplexity",
    "latency": "Latency table",
}


rule models_record:
    """results/models.json: the configured models (kind, role, source) in config order, for the report's rows."""
    output:
        f"{RESULTS}/models.json",
    params:
        models={
            name: {"kind": m["kind"], "source": model_path(name)}
            for name, m in MODELS.items()
            if m["role"] == "subject"
        },
    log:
        f"{RESULTS}/logs/models-record.log",
    benchmark:
        f"{RESULTS}/benchmarks/models-record.tsv"
    threads: 1
    resources:
        mem_mb=100,
        runtime=1,
    run:
        with open(output[0], "w") as f:
            json.dump(params.models, f, indent=2)
        with open(log[0], "w") as f:
            print(f"{len(params.models)} models", file=f)


def evaluation_results():
    """Every JSON result the report summarises, for the configured models, datasets and settings."""
    out = [f"{RESULTS}/eval/zero-shot/{m}/{d}.json" for m in SUBJECTS for d in config["zero_shot"]["datasets"]]
    if config["lm_eval"]["tasks"]:
        out += [f"{RESULTS}/eval/lm-eval/{m}.json" for m in SUBJECTS]
    for m in SUBJECTS:
        for s in unconditional_settings(m):
            out += [f"{RESULTS}/eval/gen-ppl/{m}/{s}.json", f"{RESULTS}/eval/diversity/{m}/{s}.json"]
        out += [f"{RESULTS}/eval/mauve/{m}/{s}.json" for s in conditional_settings(m)]
    if diversity_reference() is not None:
        out.append(f"{RESULTS}/eval/diversity/data/{config['diversity']['reference']}.json")
    out.append(rules.latency.output.json)
    return out


rule report:
    input:
        rules.models_record.output,
        evaluation_results(),
    output:
        markdown=f"{RESULTS}/report.md",
        tables=[
            report(
                f"{RESULTS}/report/{name}.tsv",
                caption=f"../report/{'latency' if name == 'latency' else name}.rst",
                category="Tables",
                labels={"table": title},
            )
            for name, title in TABLES.items()
        ],
    params:
        code=CODE["report"],
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "{PYSEDD} report --results {RESULTS} --out {output.markdown} --tables-dir $(dirname {output.tables[0]}) "
        "> {log} 2>&1"
