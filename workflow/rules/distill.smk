"""Few-step SEDD and the quality-latency frontier (docs/distillation.md): `pysedd distill` rounds from a configured
SEDD teacher, then `pysedd bench frontier` over every SEDD sampler, each distilled student and GPT-2. Not part of
`all`: build it with `snakemake --cores all frontier`. Active when the config has `distill:` and `frontier:` blocks.

The distillation run directory (per-round checkpoints, metrics, exports) is not a declared output, for the same
reason as training's (train.smk): a requeued or resubmitted SLURM job must find its checkpoints. It is named after a
hash of the distillation settings and the sequence length (`distill/run-<hash>/`), so changed settings start a new
run beside the old one and code edits resume the same run; nothing is deleted. SIGTERM five minutes before the job's
time limit makes the trainer checkpoint and exit 75, and inside SLURM the job requeues itself (as training does).
"""

DISTILL = config.get("distill")
FRONTIER = config.get("frontier")
FRONTIER_CODE = _cli_code("frontier", "run_frontier")


def frontier_options():
    """The `frontier:` settings that change what `bench frontier` measures (not `in_report`, which the report reads)."""
    return {k: v for k, v in FRONTIER.items() if k != "in_report"}


def distill_run():
    """The run directory of these distillation settings (a settings change starts a new one; none is deleted)."""
    key = hashlib.sha256(json.dumps(canon({"distill": DISTILL, "seq_len": config["seq_len"]}), sort_keys=True).encode()).hexdigest()[:12]
    return f"{RESULTS}/distill/run-{key}"


def distill_data():
    """The prepared corpus the students see: the workflow's training corpus ('train') or its own (a corpus spec)."""
    return rules.prepare_train.output.manifest if DISTILL["data"] == "train" else f"{RESULTS}/data/distill/manifest.json"


def distill_students():
    """Each round's exported student, in round order (round r samples with steps / 2^(r+1) steps)."""
    return [f"{distill_run()}/round-{r}/export" for r in range(DISTILL["rounds"])]


def frontier_model(kind):
    """(what bench frontier gets, its file dependency) for the teacher ('sedd') or the baseline ('gpt2')."""
    chosen = DISTILL["teacher"] if kind == "sedd" else FRONTIER.get("gpt2")
    if chosen is None:
        return "none", []
    if chosen not in MODELS or MODELS[chosen]["kind"] != kind:
        raise ValueError(f"config key '{'distill.teacher' if kind == 'sedd' else 'frontier.gpt2'}': {chosen!r} must "
                         f"name a {kind} model under 'models'")
    return model_path(chosen), model_input(chosen)


if DISTILL is not None and FRONTIER is not None:

    if DISTILL["data"] != "train":

        rule prepare_distill:
            input:
                local=local_files(DISTILL["data"]),
            output:
                manifest=f"{RESULTS}/data/distill/manifest.json",
            params:
                corpus=canon(DISTILL["data"]),
                seq_len=config["seq_len"],
                tokenizer=config["tokenizer"],
                code=CODE["prepare"],
                args=prepare_args(DISTILL["data"]),
            log:
                f"{RESULTS}/logs/data/distill.log",
            benchmark:
                f"{RESULTS}/benchmarks/data/distill.tsv"
            threads: 2
            resources:
                mem_mb=8000,
                runtime=runtime_of("prepare_distill"),
            shell:
                "{PYSEDD} prepare {params.args} --tokenizer {params.tokenizer} --length {params.seq_len} "
                "--out $(dirname {output.manifest}) --force > {log} 2>&1"

    rule distill:
        input:
            stale_check=force_stale,
            manifest=distill_data(),
            teacher=frontier_model("sedd")[1],
        output:
            rounds=f"{RESULTS}/distill/rounds.json",
        params:
            teacher=frontier_model("sedd")[0],
            options=canon(DISTILL),
            args=flags({"rounds": DISTILL["rounds"], "steps": DISTILL["steps"], "divergence": DISTILL["divergence"],
                        **DISTILL["options"],
                        **({"targets": f"{RESULTS}/distill/targets"} if DISTILL["options"].get("precompute_targets")
                           else {})}),
            run=distill_run(),
            launcher=(f"torchrun --standalone --nproc_per_node {DISTILL['nproc']} -m pysedd"
                      if DISTILL["nproc"] > 1 else PYSEDD),
        log:
            f"{RESULTS}/logs/distill.log",
        benchmark:
            f"{RESULTS}/benchmarks/distill.tsv"
        threads: 2
        resources:
            mem_mb=16000,
            runtime=DISTILL["runtime"],
            gpu=config["gpus_per_job"] * DISTILL["nproc"],
        shell:
            """
            run={params.run}
            mkdir -p $run
            budget=""
            if [ -n "${{SLURM_JOB_ID:-}}" ]; then
                budget="timeout --preserve-status --signal TERM --kill-after 600 $(( {resources.runtime} > 20 ? {resources.runtime} * 60 - 300 : {resources.runtime} * 45 ))"
            fi
            $budget {params.launcher} distill --teacher {params.teacher} {params.args} \
                --data $(dirname {input.manifest}) --out $run --no-progress >> {log} 2>&1 || rc=$?
            if [ "${{rc:-0}}" = 75 ] && [ -n "${{SLURM_JOB_ID:-}}" ]; then
                scontrol requeue $SLURM_JOB_ID; sleep 600   # checkpointed before the time limit: resume
            fi
            [ "${{rc:-0}}" = 0 ] || exit $rc
            cp $run/rounds.json {output.rounds}
            """

    rule frontier:
        input:
            stale_check=force_stale,
            rounds=rules.distill.output.rounds,
            teacher=frontier_model("sedd")[1],
            gpt2=frontier_model("gpt2")[1],
            judge=model_input(JUDGE),
        output:
            json=f"{RESULTS}/bench/frontier.json",
            table=f"{RESULTS}/bench/frontier.md",
            html=f"{RESULTS}/bench/frontier.html",
            plot=report(f"{RESULTS}/bench/frontier.png", caption="../report/frontier.rst",
                        category="Quality-latency frontier"),
        params:
            teacher=frontier_model("sedd")[0],
            gpt2=frontier_model("gpt2")[0],
            judge=judge_path(),
            students=distill_students(),
            options=canon(frontier_options()),
            args=flags({k: v for k, v in frontier_options().items() if k != "gpt2"}),
            code=FRONTIER_CODE,
        log:
            f"{RESULTS}/logs/bench/frontier.log",
        benchmark:
            f"{RESULTS}/benchmarks/bench/frontier.tsv"
        threads: 2
        resources:
            mem_mb=16000,
            runtime=runtime_of("frontier"),
            gpu=config["gpus_per_job"],
        shell:
            "{PYSEDD} bench frontier --sedd {params.teacher} --gpt2 {params.gpt2} --judge {params.judge} "
            "--students {params.students} {params.args} --out {output.json} --table {output.table} "
            "--html {output.html} --plot {output.plot} > {log} 2>&1"
