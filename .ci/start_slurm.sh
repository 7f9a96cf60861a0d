#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the SLURM tests (tests/test_slurm.py) and for trying
# `nnunet-lightseg benchmark --executor slurm` locally. Needs root and Debian's slurm-wlm and munge
# packages (`apt-get install slurm-wlm munge`; .ci/run installs them). Idempotent: does nothing when
# `sinfo` already answers. The node offers every CPU of the machine and 90% of its memory to one
# partition, `local`; jobs may be requeued (`scontrol requeue`) and start again 16 s later, not SLURM's
# default 121 s.
set -euo pipefail

if sinfo -h >/dev/null 2>&1; then
    echo "SLURM already answers:"; sinfo
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "start_slurm.sh: run as root (it starts munged, slurmctld and slurmd)" >&2; exit 1; }
for tool in munged slurmctld slurmd; do
    command -v "$tool" >/dev/null || { echo "start_slurm.sh: $tool missing: apt-get install slurm-wlm munge" >&2; exit 1; }
done

# munge: a key, then the daemon
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force

# slurm.conf for this host
host=$(hostname -s)
cpus=$(nproc)
memory=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=lightseg-local
SlurmctldHost=${host}
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120)
AuthInfo=cred_expire=15
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmUser=root
NodeName=${host} CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=local Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld
slurmd
for _ in $(seq 30); do
    if sinfo -h -o %t 2>/dev/null | grep -q idle; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "start_slurm.sh: the node did not become idle in 30 s; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
