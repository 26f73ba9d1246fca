"""Training (SEDD, GPT-2 and the AR judge) and export of the EMA weights in the `from_pretrained` format.

The run directory (checkpoints, metrics.jsonl) is deliberately NOT a declared output: Snakemake deletes outputs
before a job starts, and a requeued or resubmitted SLURM job must find its checkpoints to resume. Instead the rule
keeps a fingerprint of the training settings, the training code and the data manifest in the run directory and
wipes stale checkpoints only when that fingerprint changed, so a changed setting or re-tokenised data trains from
scratch while a preempted job resumes.

Preemption: `pysedd train` checkpoints and exits with code 75 on SIGTERM/SIGUSR1. Under SLURM the job is requeued
by SLURM (`slurm-requeue` in the profile) or, when it ran out of time, resubmitted by Snakemake (`retries`); the
wrapper below sends SIGTERM five minutes before the job's own time limit so the trainer checkpoints before SLURM
kills it. (SIGTERM rather than SIGUSR1: torchrun forwards SIGTERM to its workers, while SIGUSR1 would kill torchrun.)
"""


rule train:
    input:
        manifest=rules.prepare_train.output.manifest,
    output:
        export=directory(f"{RESULTS}/models/{{model}}/run/export"),
    params:
        kind=lambda wc: MODELS[wc.model]["kind"],
        train=lambda wc: canon(train_options(wc.model)),
        args=lambda wc: flags({k: v for k, v in train_options(wc.model).items() if k != "nproc"}),
        fingerprint=lambda wc: fingerprint(MODELS[wc.model], config["seq_len"], CODE["train"]),
        launcher=train_launcher,
        code=CODE["train"],
    log:
        f"{RESULTS}/logs/train/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{model}}.tsv"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=60,
        gpu=lambda wc: config["gpus_per_job"] * train_options(wc.model).get("nproc", 1),
    shell:
        """
        run=$(dirname {output.export})
        mkdir -p $run
        echo {params.fingerprint} $(sha256sum < {input.manifest}) > $run/.fingerprint.new
        if ! cmp -s $run/.fingerprint.new $run/.fingerprint; then rm -rf $run/checkpoints $run/metrics.jsonl; fi
        mv $run/.fingerprint.new $run/.fingerprint
        budget=""
        if [ -n "${{SLURM_JOB_ID:-}}" ]; then
            budget="timeout --preserve-status --signal TERM --kill-after 600 $(( {resources.runtime} > 20 ? {resources.runtime} * 60 - 300 : {resources.runtime} * 45 ))"
        fi
        $budget {params.launcher} train --model {params.kind} {params.args} \
            --data $(dirname {input.manifest}) --out $run --no-progress >> {log} 2>&1
        """


rule export:
    """The exported EMA model, copied out of the run directory (write-protected when protect_models is set)."""
    input:
        rules.train.output.export,
    output:
        protected(directory(f"{RESULTS}/models/{{model}}/model"))
        if config["protect_models"]
        else directory(f"{RESULTS}/models/{{model}}/model"),
    params:
        code=CODE["train"],
    log:
        f"{RESULTS}/logs/export/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/export/{{model}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        """
        rm -rf {output}.tmp
        cp -r {input} {output}.tmp
        if [ -f $(dirname {input})/metrics.jsonl ]; then cp $(dirname {input})/metrics.jsonl {output}.tmp/; fi
        mv {output}.tmp {output}
        ls -l {output} > {log} 2>&1
        """
