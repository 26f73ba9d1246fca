"""Training (SEDD, GPT-2 and the AR judge) and export of the EMA weights in the `from_pretrained` format.

One rule per model: `pysedd train` into the run directory `models/<name>/run/` (checkpoints, metrics.jsonl,
train.log), then its export is copied to `models/<name>/model`, the rule's only output. So a job that did not finish
(preempted, out of time, failed) leaves no `model`, and Snakemake sees the run as incomplete.

What reruns training: only the settings that change the trajectory (`trajectory_options`), the sequence length and
the tokenised data. Code edits, logging/checkpoint/eval cadence, `nproc` and the device do not; a longer `steps`
continues the run from its last checkpoint. The run directory is deliberately NOT a declared output (Snakemake
deletes outputs before a job starts) and the workflow never deletes checkpoints: `pysedd train` decides whether the
checkpoints there belong to the same trajectory and resumes them; a run of other settings (or one already past
`steps`) is moved aside into `run/superseded-<UTC time>/` (`--supersede`), never deleted.

Preemption and time limits: `pysedd train` checkpoints and exits with code 75 on SIGTERM/SIGUSR1. Inside a SLURM
job the trainer runs under `timeout --signal TERM` ending five minutes before the job's time limit (SIGTERM, because
torchrun forwards it to its workers while SIGUSR1 would kill torchrun); on exit 75 the job requeues itself with
`scontrol requeue`, and a job preempted by SLURM is requeued by SLURM (`slurm-requeue` in the profile). Either way
Snakemake keeps waiting for the same job, which resumes; every other failure fails the job at once (retries: 0).
"""

# train options that only change what is logged or where/how fast it runs, never the weights
CADENCE_OPTIONS = ("log_every", "eval_every", "eval_batches", "ckpt_every", "keep_last", "nproc", "device",
                   "micro_batch_size")


def trajectory_options(name):
    return {k: v for k, v in train_options(name).items() if k not in CADENCE_OPTIONS}


def train_script(wc, output, input, log, resources):
    """The bash of one training job (rendered here so the cadence options stay out of the rerun-triggering params)."""
    options = train_options(wc.model)
    run = f"{RESULTS}/models/{wc.model}/run"
    args = flags({k: v for k, v in options.items() if k != "nproc"})
    budget = resources.runtime * 60 - 300 if resources.runtime > 20 else resources.runtime * 45
    return f"""
        run={run}
        mkdir -p $run {os.path.dirname(log)}
        rm -rf $run/export {output}.tmp         # an export is only ever the product of the attempt that made it
        touch $run/train.log $run/metrics.jsonl
        cat $run/train.log > {log}              # earlier attempts first: the log keeps every attempt
        exec > >(tee -a $run/train.log >> {log}) 2>&1
        echo "=== attempt at $(date -u +%FT%TZ) on $(hostname), SLURM job ${{SLURM_JOB_ID:-none}}: steps {options['steps']}"
        tail -n 0 -F $run/metrics.jsonl 2>/dev/null &   # progress (step, loss, tokens/s) into the log as it is written
        tailer=$!
        budget=""
        if [ -n "${{SLURM_JOB_ID:-}}" ]; then budget="timeout --preserve-status --signal TERM --kill-after 600 {budget}"; fi
        rc=0
        $budget {train_launcher(wc)} train --kind {MODELS[wc.model]['kind']} {args} \\
            --data $(dirname {input.manifest}) --out $run --supersede --no-progress || rc=$?
        sleep 1; kill $tailer 2>/dev/null || true
        echo "=== attempt ended with exit code $rc"
        if [ $rc = 75 ] && [ -n "${{SLURM_JOB_ID:-}}" ]; then
            echo "=== checkpointed before the time limit: requeueing SLURM job $SLURM_JOB_ID to resume"
            scontrol requeue $SLURM_JOB_ID
            sleep 600                           # SLURM ends this attempt and runs the job again
        fi
        [ $rc = 0 ] || exit $rc
        cp -r $run/export {output}.tmp
        cp $run/metrics.jsonl {output}.tmp/
        mv {output}.tmp {output}
    """


rule train:
    input:
        stale_check=force_stale,
        manifest=rules.prepare_train.output.manifest,
    output:
        protected(directory(f"{RESULTS}/models/{{model}}/model"))
        if config["protect_models"]
        else directory(f"{RESULTS}/models/{{model}}/model"),
    params:
        kind=lambda wc: MODELS[wc.model]["kind"],
        train=lambda wc: canon(trajectory_options(wc.model)),
        seq_len=config["seq_len"],
    log:
        f"{RESULTS}/logs/train/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{model}}.tsv"
    threads: lambda wc: train_threads(wc.model)
    resources:
        mem_mb=16000,
        runtime=lambda wc: runtime_of("train"),
        gpu=lambda wc: config["gpus_per_job"] * train_options(wc.model).get("nproc", 1),
    run:
        shell(train_script(wildcards, output[0], input, log[0], resources).replace("{", "{{").replace("}", "}}"))
