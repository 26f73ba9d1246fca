"""The report: the paper's tables 1-6 and the latency figure as results/report.md (pysedd report), the same tables
as TSV files, and as HTML pages wrapped in report() so `snakemake --report report.html` shows them inline, with
captions (workflow/report/*.rst, Jinja templates) that state the settings of this config."""

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
        runtime=runtime_of("models_record"),
    run:
        with open(output[0], "w") as f:
            json.dump(params.models, f, indent=2)
        with open(log[0], "w") as f:
            print(f"{len(params.models)} models", file=f)


rule report:
    input:
        stale_check=force_stale,
        record=rules.models_record.output,
        results=evaluation_results(),
    output:
        markdown=f"{RESULTS}/report.md",
        tables=[f"{RESULTS}/report/{name}.tsv" for name in TABLES],
        pages=[
            report(
                f"{RESULTS}/report/{name}.html",
                caption=f"../report/{name}.rst",
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
        runtime=runtime_of("report"),
    shell:
        "{PYSEDD} report --results {RESULTS} --out {output.markdown} --tables-dir $(dirname {output.tables[0]}) "
        "{input.results} > {log} 2>&1 && python {workflow.basedir}/workflow/scripts/html_tables.py {output.tables}"
