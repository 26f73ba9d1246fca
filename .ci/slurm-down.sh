#!/usr/bin/env bash
# slurm-down.sh: stop only what slurm-up.sh started (by pid file / scontrol), then unlink its config.
set -uo pipefail
ROOT=${SMK_SLURM_ROOT:-/run/smk-slurm}
pids=()
for f in "$ROOT/run/slurmd.pid" "$ROOT/run/slurmctld.pid"; do [ -s "$f" ] && pids+=("$(cat "$f")"); done
if [ ${#pids[@]} -gt 0 ]; then
    scancel --full --quiet --user root 2>/dev/null || true      # jobs of this throw-away cluster only
    scontrol shutdown 2>/dev/null || kill "${pids[@]}" 2>/dev/null
    for p in "${pids[@]}"; do for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
fi
[ -s "$ROOT/munge/munged.pid" ] && kill "$(cat "$ROOT/munge/munged.pid")" 2>/dev/null
for _ in $(seq 1 50); do [ -e "$ROOT/munge/munge.socket.2" ] || break; sleep 0.1; done
rm -f "$ROOT/run/slurmd.pid" "$ROOT/run/slurmctld.pid"
[ -L /etc/slurm/slurm.conf ] && rm -f /etc/slurm/slurm.conf
[ -L /etc/slurm/gres.conf ] && rm -f /etc/slurm/gres.conf
echo "slurm-down: stopped"
exit 0
