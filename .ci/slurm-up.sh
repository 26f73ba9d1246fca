#!/usr/bin/env bash
# slurm-up.sh: a throw-away single-node SLURM on 127.0.0.1 (munge + slurmctld + slurmd, no slurmdbd), run as root.
# Debian 12 / Slurm 22.05 (docs/workflow.md#throw-away-slurm). SMK_SLURM_ROOT: state dir (short path: the munge
# socket must stay under 108 bytes); SMK_FAKE_GPU=1 adds one fake GPU (gres File=/dev/null) so gpu= rules can
# be scheduled.
set -euo pipefail
ROOT=${SMK_SLURM_ROOT:-/run/smk-slurm}
CONF=$ROOT/etc/slurm.conf
export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
if [ -s "$ROOT/run/slurmctld.pid" ] && kill -0 "$(cat "$ROOT/run/slurmctld.pid")" 2>/dev/null; then
    echo "slurm-up: already running under $ROOT (run slurm-down.sh first)" >&2; exit 1
fi
rm -rf "$ROOT/state"                                   # stale state brings back DRAIN reasons and old jobs
mkdir -p "$ROOT"/{etc,state/ctld,state/d,log,run,munge} /etc/slurm
chmod 711 "$ROOT/munge"                                # munged: "execute permissions for all required"
[ -f "$ROOT/munge/munge.key" ] || { mungekey --create --keyfile="$ROOT/munge/munge.key"; chmod 400 "$ROOT/munge/munge.key"; }
MEM_MB=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 2048 ))
GRES=""; GRESTYPES=""
if [ "${SMK_FAKE_GPU:-0}" = 1 ]; then
    GRES=" Gres=gpu:1"; GRESTYPES="GresTypes=gpu"
    echo "NodeName=localhost Name=gpu File=/dev/null Count=1" > "$ROOT/etc/gres.conf"
    ln -sfn "$ROOT/etc/gres.conf" /etc/slurm/gres.conf
fi
cat > "$CONF" <<CONF
ClusterName=smktest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$ROOT/munge/munge.socket.2
StateSaveLocation=$ROOT/state/ctld
SlurmdSpoolDir=$ROOT/state/d
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
MpiDefault=none
$GRESTYPES
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEM_MB State=UNKNOWN$GRES
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
ln -sfn "$CONF" /etc/slurm/slurm.conf                  # the jobstep plugin drops SLURM_CONF: use the default path
munged --socket="$ROOT/munge/munge.socket.2" --key-file="$ROOT/munge/munge.key" \
       --pid-file="$ROOT/munge/munged.pid" --log-file="$ROOT/munge/munged.log" \
       --seed-file="$ROOT/munge/munged.seed"
slurmctld -f "$CONF"
slurmd -f "$CONF" -N localhost                         # the node name differs from the hostname
for _ in $(seq 1 100); do
    sinfo -h -o %T 2>/dev/null | grep -qx idle && { echo "slurm-up: node localhost idle ($ROOT)"; exit 0; }
    sleep 0.2
done
echo "slurm-up: node not idle" >&2; tail -n 30 "$ROOT"/log/*.log >&2; exit 1
