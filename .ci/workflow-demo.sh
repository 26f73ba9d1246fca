#!/usr/bin/env bash
# workflow-demo.sh: the whole demo DAG (config.yaml, or $SMK_CONFIG) on this machine, offline, then the HTML report.
# Run from anywhere; works in a scratch copy when SMK_WORKDIR is set (results go there). Hard timeout
# SMK_CI_TIMEOUT (s, default 1200). Prints the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
SNAKEMAKE=${SNAKEMAKE:-python -m snakemake}
TIMEOUT=${SMK_CI_TIMEOUT:-1200}
CONFIG=${SMK_CONFIG:-config.yaml}
WORKDIR=${SMK_WORKDIR:-.}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
start=$(date +%s)
CONFIG=$(realpath "$CONFIG")
timeout --kill-after 30 "$TIMEOUT" $SNAKEMAKE --cores "${SMK_CORES:-all}" --configfile "$CONFIG" -d "$WORKDIR"
echo "workflow-demo: DAG done in $(( $(date +%s) - start )) s"
$SNAKEMAKE --configfile "$CONFIG" -d "$WORKDIR" -n | grep -q "Nothing to be done" \
    || { echo "workflow-demo: a second run would redo work" >&2; exit 1; }
$SNAKEMAKE --configfile "$CONFIG" -d "$WORKDIR" --report "$WORKDIR/report.html"
echo "workflow-demo: OK ($WORKDIR/report.html)"
