#!/usr/bin/env bash
# A single-node Slurm on this machine for the e2e test of `--executor slurm`: munged, slurmctld
# and slurmd on localhost, started as root without systemd (Debian's slurm-wlm 22.05 + munge).
# No accounting storage; proctrack/linuxproc and task/none need no cgroups. Idempotent: a cluster
# that already answers is left as it is. Prints nothing but errors; exits 0 once a node is idle.
#   tests/slurm/start.sh          start (installing the packages first when apt is usable)
#   tests/slurm/start.sh stop     stop the daemons
set -euo pipefail

STATE=${SHIFTADD_SLURM_STATE:-/var/tmp/shiftadd-slurm}
host=$(hostname -s)

if [ "${1:-}" = stop ]; then
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge) \
            >/dev/null
    else
        echo "slurm: slurm-wlm and munge are not installed (apt-get install slurm-wlm munge)" >&2
        exit 1
    fi
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurm: the test cluster's daemons start as root" >&2
    exit 1
fi

# munge: the key and the daemon (as its own user, as Debian's unit does).
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi

# One node with this machine's cores and memory, one partition.
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log" /etc/slurm
conf=/etc/slurm/slurm.conf
cat > "$conf.new" <<CONF
ClusterName=shiftadd-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SchedulerParameters=sched_interval=1
KillWait=30
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$conf.new" "$conf" 2>/dev/null; then
    mv "$conf.new" "$conf"
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    sleep 1
else
    rm -f "$conf.new"
fi
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
    case "$state" in
        idle*|mix*|alloc*) exit 0 ;;
        down*|drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "slurm: node $host did not become idle (state '${state:-none}'); see $STATE/log" >&2
exit 1
