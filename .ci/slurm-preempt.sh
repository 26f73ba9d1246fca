#!/usr/bin/env bash
# slurm-preempt.sh: preemption through SLURM for real. Brings up the single-node SLURM, starts the SEDD training job
# of config/ci.yaml (more steps, frequent checkpoints) through the slurm-ci profile, requeues the running job with
# `scontrol requeue` once a checkpoint exists (SLURM signals the job, pysedd train checkpoints and exits 75, SLURM
# puts it back in the queue), and checks that the workflow still finishes and that the requeued job resumed from
# the checkpoint instead of starting over. Run as root from anywhere; SMK_CI_TIMEOUT (s, default 900).
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD
SNAKEMAKE=${SNAKEMAKE:-python -m snakemake}
TIMEOUT=${SMK_CI_TIMEOUT:-900}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
RUN=results-ci/models/sedd/run
rm -rf results-ci/models/sedd
mkdir -p results-ci
bash .ci/slurm-up.sh
trap 'bash "$HERE/.ci/slurm-down.sh"' EXIT
start=$(date +%s)
CONFIG=$(mktemp --suffix .yaml)
python - "$CONFIG" <<'PY'    # config/ci.yaml with a longer SEDD training that checkpoints every 4 steps
import sys, yaml
config = yaml.safe_load(open("config/ci.yaml"))
config["models"]["sedd"]["train"].update(steps=40, ckpt_every=4, log_every=1)
yaml.safe_dump(config, open(sys.argv[1], "w"))
PY
timeout --kill-after 30 "$TIMEOUT" $SNAKEMAKE results-ci/models/sedd/model --workflow-profile workflow/profiles/slurm-ci \
    --configfile "$CONFIG" > results-ci/preempt.log 2>&1 &
smk=$!
job=""
for _ in $(seq 1 "$TIMEOUT"); do                       # wait for the training job to run and checkpoint
    job=$(squeue -h -t RUNNING -o '%i %k' 2>/dev/null | awk '/train/{print $1; exit}')   # %k: the rule in the comment
    if [ -n "$job" ] && ls "$RUN"/checkpoints/step_* >/dev/null 2>&1; then break; fi
    sleep 1
done
[ -n "$job" ] || { echo "slurm-preempt: the training job never ran" >&2; cat results-ci/preempt.log >&2; exit 1; }
echo "slurm-preempt: requeueing SLURM job $job after $(ls "$RUN"/checkpoints | tail -1)"
scontrol requeue "$job"
wait "$smk" || { echo "slurm-preempt: workflow failed" >&2; tail -50 results-ci/preempt.log >&2; exit 1; }
grep -h "resumed from" .snakemake/slurm_logs/rule_train/sedd/*.log "$HERE"/results-ci/logs/train/sedd.log 2>/dev/null \
    | tail -1 | grep . || { echo "slurm-preempt: the requeued job did not resume" >&2; exit 1; }
[ "$(tail -1 "$RUN"/metrics.jsonl | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["step"])')" = 40 ]
# the training log keeps both attempts, with losses
[ "$(grep -c '^=== attempt at' results-ci/logs/train/sedd.log)" -ge 2 ] \
    || { echo "slurm-preempt: logs/train/sedd.log lost an attempt" >&2; exit 1; }
grep -q '"loss"' results-ci/logs/train/sedd.log || { echo "slurm-preempt: no losses in the training log" >&2; exit 1; }
echo "slurm-preempt: OK, preempted, requeued and resumed in $(( $(date +%s) - start )) s"
