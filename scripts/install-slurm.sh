#!/usr/bin/env bash
# A real Slurm cluster on this one machine, for the Slurm launcher's tests and CI: Debian's Slurm 22.05
# (slurmctld, slurmd, munge), four nodes n1..n4, each its own slurmd (`slurmd -N`, its own port and spool)
# with its own node address 10.77.0.1x. The addresses sit on the loopback device, so a role that binds
# its node's address is reached at that address only: roles find each other from the allocation
# (NodeAddr), never 127.0.0.1. No systemd here: the daemons are started directly. Idempotent: a second
# call restarts the daemons with the same configuration.
#
#   scripts/install-slurm.sh          install (if needed), configure, start; waits until the nodes are idle
#   scripts/install-slurm.sh stop     stop the daemons (jobs are cancelled first)
set -euo pipefail

NODES=4
CONF_DIR=/etc/slurm
STATE=/var/spool/slurm-infer

stop() {
  scancel --full --user="$(id -un)" 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  for _ in $(seq 50); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || return 0; sleep 0.2; done
  pkill -9 -x slurmctld 2>/dev/null || true
  pkill -9 -x slurmd 2>/dev/null || true
}

if [[ "${1:-}" == stop ]]; then stop; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

for i in $(seq "$NODES"); do
  ip -4 addr show dev lo | grep -q "10.77.0.1$i/" || ip addr add "10.77.0.1$i/32" dev lo
done

# munge: one key, the daemon running (path-based socket in /run/munge).
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
[[ -s /etc/munge/munge.key ]] || { dd if=/dev/urandom bs=1 count=1024 2>/dev/null >/etc/munge/munge.key; }
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

CPUS=$(nproc)
mkdir -p "$CONF_DIR" "$STATE/ctld" /var/log/slurm-infer
{
  cat <<EOF
# Written by scripts/install-slurm.sh: a test cluster of $NODES nodes on one machine.
ClusterName=infer-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm-infer/slurmctld.log
SlurmdLogFile=/var/log/slurm-infer/slurmd-%n.log
# No cgroups in this container: processes are tracked by their parent, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
# Eight GPUs per node on paper (no device files: nothing binds them), so the GPU kinds' batch scripts
# (--gpus-per-node=8) are checked by `sbatch --test-only` here as on a GPU cluster.
GresTypes=gpu
ReturnToService=2
SlurmdTimeout=60
KillWait=10
# Every node is the same $CPUS cores: nodes are shared, never exclusive.
EOF
  for i in $(seq "$NODES"); do
    echo "NodeName=n$i NodeHostname=$(hostname) NodeAddr=10.77.0.1$i Port=$((6820 + i)) CPUs=$CPUS RealMemory=4000 Gres=gpu:8 State=UNKNOWN"
  done
  echo "PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
} >"$CONF_DIR/slurm.conf"
echo "ConstrainCores=no" >"$CONF_DIR/cgroup.conf"
for i in $(seq 0 7); do [[ -e /dev/infer-gpu$i ]] || mknod "/dev/infer-gpu$i" c 1 3; done  # /dev/null twins
printf 'AutoDetect=off\nName=gpu File=/dev/infer-gpu[0-7]\n' >"$CONF_DIR/gres.conf"

stop
for i in $(seq "$NODES"); do mkdir -p "$STATE/n$i"; done
slurmctld -c  # a cold start: no node state (drained by an earlier configuration) or job carried over
for i in $(seq "$NODES"); do slurmd -N "n$i"; done

for _ in $(seq 120); do
  idle=$(sinfo --noheader --Node --format=%T 2>/dev/null | grep -cx idle || true)
  [[ "$idle" -ge "$NODES" ]] && { sinfo; exit 0; }
  sleep 0.5
done
echo "install-slurm.sh: the nodes did not come up idle in 60 s:" >&2
sinfo >&2 || true
tail -n 20 /var/log/slurm-infer/*.log >&2 || true
exit 1
