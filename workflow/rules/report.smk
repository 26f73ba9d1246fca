"""The report: the paper's Tables 1-7 and Figure 1 as results/report.md (pysedd report), each number beside the
published one when the config runs the paper's models, and the same tables as HTML files plus the figure wrapped in
report() so `snakemake --report report.html` shows them. The layout comes from pysedd's paper tables data, the
numbers from the result records; `pysedd report --plan --configfile <config>` lists the paper cells a config fills.
With `frontier.in_report` the quality-latency frontier (distill.smk) is the report's last section."""
from pysedd.paper import load as load_paper_tables

# captions (Jinja templates under workflow/report/) that state the settings this config actually used
CAPTIONS = {"table1": "table1-zero-shot", "table2": "table2-lm-eval", "table3": "table3-gen-ppl",
            "table4": "table4-diversity", "table5": "mauve", "table6": "mauve", "table7": "latency"}


# settings that decide where and how fast jobs run, never a number in the report: changing them leaves it as it is
OPERATIONAL_KEYS = ("pysedd", "runtime", "cpus_per_gpu", "gpus_per_job", "protect_models")


def report_config():
    """The resolved config less the operational settings and the training cadence (train.smk's CADENCE_OPTIONS)."""
    resolved = {k: v for k, v in config.items() if k not in OPERATIONAL_KEYS}
    resolved["models"] = {
        name: {**m, **({"train": trajectory_options(name)} if "train" in m else {})} for name, m in MODELS.items()
    }
    return canon(resolved)


rule config_record:
    """results/config.json: the config as the workflow resolved it (defaults filled in) less what cannot change a
    result, which the report plans from."""
    output:
        f"{RESULTS}/config.json",
    params:
        config=report_config(),
    log:
        f"{RESULTS}/logs/config-record.log",
    benchmark:
        f"{RESULTS}/benchmarks/config-record.tsv"
    threads: 1
    resources:
        mem_mb=100,
        runtime=runtime_of("config_record"),
    run:
        with open(output[0], "w") as f:
            json.dump(params.config, f, indent=2)
        with open(log[0], "w") as f:
            print(f"{len(params.config['models'])} models", file=f)


# frontier.in_report: the quality-latency frontier (distill.smk's rule `frontier`) becomes the report's last section
FRONTIER_IN_REPORT = bool((config.get("frontier") or {}).get("in_report"))


rule report:
    input:
        stale_check=force_stale,
        config=rules.config_record.output,
        results=evaluation_results(),
        frontier=[f"{RESULTS}/bench/frontier.json"] if FRONTIER_IN_REPORT else [],
    output:
        markdown=f"{RESULTS}/report.md",
        tables=[
            report(
                f"{RESULTS}/report/{table.id}.html",
                caption=f"../report/{CAPTIONS[table.id]}.rst",
                category="Tables",
                labels={"table": table.title},
            )
            for table in load_paper_tables().tables
        ],
        figure=report(
            f"{RESULTS}/report/figure1-latency.png",
            caption="../report/latency.rst",
            category="Figure 1: latency",
        ),
        frontier=[report(f"{RESULTS}/report/frontier.html", caption="../report/frontier.rst",
                         category="Quality-latency frontier"), f"{RESULTS}/report/frontier.png"]
        if FRONTIER_IN_REPORT else [],
    params:
        frontier=f"--frontier {RESULTS}/bench/frontier.json" if FRONTIER_IN_REPORT else "",
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
        "{PYSEDD} report --configfile {input.config} --results {RESULTS} --out {output.markdown} "
        "--tables-dir $(dirname {output.figure}) {params.frontier} > {log} 2>&1"
