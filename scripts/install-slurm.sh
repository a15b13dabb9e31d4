#!/usr/bin/env bash
# A real Slurm cluster on this one machine, for the Slurm launcher's tests and CI: Debian's Slurm 22.05
# (slurmctld, slurmd, munge) and four nodes n1..n4. Each node is a network namespace of its own
# (slurm-n<i>, with its own hostname n<i>) holding one slurmd (`slurmd -N n<i>`), joined to the machine by a
# bridge: node n<i> is 10.77.0.1<i>, slurmctld and the machine itself 10.77.0.1 (the bridge). Names resolve
# through /etc/hosts (n<i> -> 10.77.0.1<i>), so a role on node n1 reaches a role on n2 at `n2` or at n2's
# NodeAddr, and pytest (outside every node) reaches both the same way; 127.0.0.1 inside a step is that node's
# own loopback, as on a real node. Steps run in their node's namespace, so two nodes can use the same port.
# No systemd here: the daemons are started directly; no cgroups: processes are tracked by their parents.
# Accounting (sacct) is real too: slurmdbd over a MariaDB server of its own (its data under the spool,
# on 127.0.0.1:3307 only, so a MariaDB the machine runs anyway keeps 3306 and its data).
#
#   scripts/install-slurm.sh            install (if needed), configure, start; waits until the nodes are idle.
#                                       A cluster already up with the same configuration is left as it is.
#   scripts/install-slurm.sh --restart  restart the daemons even so (running jobs are cancelled)
#   scripts/install-slurm.sh stop       = scripts/stop-slurm.sh
#   SLURM_TEST_NODES=2 scripts/...      another number of nodes (1..9)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
if [[ "${1:-}" == stop ]]; then exec "$HERE/stop-slurm.sh"; fi

NODES=${SLURM_TEST_NODES:-4}
NET=10.77.0                 # the bridge is $NET.1, node i is $NET.1i
BRIDGE=slurm-br
CONF_DIR=/etc/slurm
STATE=/var/spool/slurm-infer
LOGS=/var/log/slurm-infer
MARK="# slurm-infer test cluster"
DB_PORT=3307                # the accounting database's MariaDB, on 127.0.0.1 only
DB_DIR=$STATE/db
DB_RUN=/run/slurm-infer-db  # its socket and pid file
[[ "$NODES" =~ ^[1-9]$ ]] || { echo "install-slurm.sh: SLURM_TEST_NODES must be 1..9" >&2; exit 2; }

# --- packages -------------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null || ! command -v ip >/dev/null \
   || ! command -v nsenter >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Their postinst scripts' service starts are refused here (policy-rc.d); a slurmdbd one started elsewhere
  # is ended below by its pid file like ours, and a Debian MariaDB keeps to its own port and data.
  apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd mariadb-server munge iproute2 util-linux \
    >/dev/null
fi

# --- network: a bridge on the machine, a namespace with one veth per node ---------------------------------
# Addresses an earlier version of this script put on lo would shadow the nodes: gone.
for a in $(ip -4 -o addr show dev lo | awk -v p="$NET." 'index($4, p) == 1 {print $4}'); do ip addr del "$a" dev lo; done
ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
ip addr replace "$NET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for i in $(seq "$NODES"); do
  ns=slurm-n$i
  [[ -e /run/netns/$ns ]] || ip netns add "$ns"
  if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
    ip link del "slurm-v$i" 2>/dev/null || true
    ip link add "slurm-v$i" type veth peer name eth0 netns "$ns"
  fi
  ip link set "slurm-v$i" master "$BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr replace "$NET.1$i/24" dev eth0
  ip -n "$ns" link set eth0 up
done
hosts=$(grep -v "$MARK" /etc/hosts || true)
hosts+=$'\n'"$NET.1 slurm-ctl $MARK"
for i in $(seq "$NODES"); do hosts+=$'\n'"$NET.1$i n$i $MARK"; done
[[ "$(cat /etc/hosts)" == "$hosts" ]] || printf '%s\n' "$hosts" >/etc/hosts  # in place: may be a mount point

# --- munge: one key, the daemon running (its socket is a path, reached from every namespace) --------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
[[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom bs=1 count=1024 2>/dev/null >/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
munge_pid=$(cat /run/munge/munged.pid 2>/dev/null || true)
if [[ -z "$munge_pid" || "$(cat /proc/"$munge_pid"/comm 2>/dev/null)" != munged ]]; then
  runuser -u munge -- /usr/sbin/munged --force
fi

# --- configuration --------------------------------------------------------------------------------------
CPUS=$(nproc)
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 9 / 10240 ))  # what every node claims; not enforced
mkdir -p "$CONF_DIR" "$STATE/ctld" "$LOGS"
conf=$(mktemp)
trap 'rm -f "$conf"' EXIT
{
  cat <<EOF
# Written by scripts/install-slurm.sh: a test cluster of $NODES nodes on one machine (one network
# namespace per node).
ClusterName=infer-test
SlurmctldHost=localhost($NET.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
# No cgroups in this container: processes are tracked by their parent, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Accounting through slurmdbd, at the bridge's address so that sacct works on the nodes too; each job's
# comment (our owner tag) is stored with it; each step's CPU and memory read from /proc.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NET.1
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
# Eight GPUs per node on paper (no device files: nothing binds them), so the GPU kinds' batch scripts
# (--gpus-per-node=8) are checked by \`sbatch --test-only\` here as on a GPU cluster.
GresTypes=gpu
ReturnToService=2
SlurmdTimeout=60
KillWait=10
# Every node is the same $CPUS cores and memory of the one machine: nodes are shared, never exclusive.
EOF
  for i in $(seq "$NODES"); do
    echo "NodeName=n$i NodeHostname=n$i NodeAddr=$NET.1$i CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:8 State=UNKNOWN"
  done
  echo "PartitionName=debug Nodes=n[1-$NODES] Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
} >"$conf"
changed=0
cmp -s "$conf" "$CONF_DIR/slurm.conf" || { cp "$conf" "$CONF_DIR/slurm.conf"; changed=1; }
# slurmdbd's (mode 600, root's: it holds the password). The password is made once and kept: the
# database user has it.
db_pass=$(sed -n 's/^StoragePass=//p' "$CONF_DIR/slurmdbd.conf" 2>/dev/null || true)
[[ -n "$db_pass" ]] || db_pass=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
cat >"$conf" <<EOF
# Written by scripts/install-slurm.sh: the test cluster's accounting, into the MariaDB server it starts.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
if ! cmp -s "$conf" "$CONF_DIR/slurmdbd.conf"; then
  install -m 0600 -o root -g root "$conf" "$CONF_DIR/slurmdbd.conf"
  changed=1
fi
echo "ConstrainCores=no" >"$CONF_DIR/cgroup.conf"
for i in $(seq 0 7); do [[ -e /dev/infer-gpu$i ]] || mknod "/dev/infer-gpu$i" c 1 3; done  # /dev/null twins
printf 'AutoDetect=off\nName=gpu File=/dev/infer-gpu[0-7]\n' >"$CONF_DIR/gres.conf"

# --- daemons --------------------------------------------------------------------------------------------
alive() { local p; p=$(cat "$1" 2>/dev/null) && [[ "$(cat /proc/"$p"/comm 2>/dev/null)" == "$2" ]]; }
running() {  # the database, slurmdbd, slurmctld and every node's slurmd, each slurmd inside its namespace
  local p
  alive "$DB_RUN/mariadbd.pid" mariadbd && alive /run/slurmdbd.pid slurmdbd && alive /run/slurmctld.pid slurmctld \
    || return 1
  for i in $(seq "$NODES"); do
    p=$(cat "/run/slurmd-n$i.pid" 2>/dev/null) && [[ "$(cat /proc/"$p"/comm 2>/dev/null)" == slurmd ]] || return 1
    [[ "$(ip netns identify "$p" 2>/dev/null)" == "slurm-n$i" ]] || return 1
  done
}
idle_nodes() { sinfo --noheader --Node --format='%N %T' 2>/dev/null | awk '$2 ~ /^(idle|mixed|allocated)$/' | wc -l; }

if [[ $changed == 0 && "${1:-}" != --restart ]] && running && [[ $(idle_nodes) -ge $NODES ]]; then
  echo "install-slurm.sh: the cluster is already up"
  sinfo
  exit 0
fi

t0=$(date +%s.%N)
"$HERE/stop-slurm.sh" >/dev/null
runuser -u munge -- /usr/sbin/munged --force  # stop-slurm.sh ended it too

# The accounting database: a MariaDB server of our own (no Debian defaults), its database and user.
install -d -o mysql -g mysql -m 0750 "$DB_DIR"
install -d -o mysql -g mysql -m 0755 "$DB_RUN"
touch "$LOGS/mariadb.log" && chown mysql:mysql "$LOGS/mariadb.log"  # it writes as mysql
if [[ ! -d "$DB_DIR/mysql" ]]; then
  mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --skip-test-db \
    --auth-root-authentication-method=socket >"$LOGS/mariadb-install.log" 2>&1 \
    || { tail -n 20 "$LOGS/mariadb-install.log" >&2; exit 1; }
fi
db() { mariadb --no-defaults --socket="$DB_RUN/mariadb.sock" -uroot "$@"; }  # root by its socket: we are root
# InnoDB settings as slurmdbd asks (it logs an error otherwise); the buffer pool is reserved, not filled.
setsid mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" --socket="$DB_RUN/mariadb.sock" \
  --pid-file="$DB_RUN/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
  --innodb-buffer-pool-size=4G --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
  --log-error="$LOGS/mariadb.log" </dev/null >/dev/null 2>&1 &
for _ in $(seq 300); do db -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
db -e 'SELECT 1' >/dev/null \
  || { echo "install-slurm.sh: MariaDB did not start:" >&2; tail -n 20 "$LOGS/mariadb.log" >&2; exit 1; }
db <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
slurmdbd
for _ in $(seq 300); do sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1 && break; sleep 0.1; done
# Registered before slurmctld starts, so that it sends every job from the first on.
if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx infer-test; then
  sacctmgr -i add cluster infer-test >/dev/null \
    || { echo "install-slurm.sh: slurmdbd does not answer:" >&2; tail -n 20 "$LOGS/slurmdbd.log" >&2; exit 1; }
fi

for i in $(seq "$NODES"); do mkdir -p "$STATE/n$i"; done
slurmctld -c  # a cold start: no node state (drained by an earlier configuration) or job carried over
# A slurmd that finds no slurmctld retries its registration only after about 10 s: start them once it answers.
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
for i in $(seq "$NODES"); do
  nsenter --net="/run/netns/slurm-n$i" unshare --uts -- sh -c "hostname n$i && exec slurmd -N n$i"
done

for _ in $(seq 120); do
  if [[ $(sinfo --noheader --Node --format=%T 2>/dev/null | grep -cx idle || true) -ge $NODES ]]; then
    echo "install-slurm.sh: $NODES nodes idle $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s after the daemons started"
    sinfo
    exit 0
  fi
  sleep 0.5
done
echo "install-slurm.sh: the nodes did not come up idle in 60 s:" >&2
sinfo >&2 || true
tail -n 20 "$LOGS"/*.log >&2 || true
exit 1
