#!/usr/bin/env bash
# slurm-ci.sh: bring up a single-node SLURM, run part of the CI DAG (tokenise -> train SEDD -> export -> sample ->
# diversity) through the slurm-ci profile, check that a second run has nothing to do, tear SLURM down.
# Run as root from the repository root. Env: SMK_CI_TIMEOUT (s, default 900), SMK_CI_TARGETS (override targets),
# SNAKEMAKE (command, default "python -m snakemake"), SMK_SLURM_ROOT (see slurm-up.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD
SNAKEMAKE=${SNAKEMAKE:-python -m snakemake}
TIMEOUT=${SMK_CI_TIMEOUT:-900}
TARGETS=${SMK_CI_TARGETS:-results-ci/samples/sedd/T8.npz results-ci/eval/diversity/sedd/T8.json}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
bash .ci/slurm-up.sh
trap 'bash "$HERE/.ci/slurm-down.sh"' EXIT
start=$(date +%s)
# targets first: --configfile takes every following word
timeout --kill-after 30 "$TIMEOUT" $SNAKEMAKE $TARGETS --workflow-profile workflow/profiles/slurm-ci \
    --configfile config/ci.yaml
$SNAKEMAKE $TARGETS -n --workflow-profile workflow/profiles/slurm-ci --configfile config/ci.yaml \
    | grep -q "Nothing to be done" || { echo "slurm-ci: a second run would redo work" >&2; exit 1; }
echo "slurm-ci: OK, SLURM run of $(echo $TARGETS | wc -w) targets in $(( $(date +%s) - start )) s"
