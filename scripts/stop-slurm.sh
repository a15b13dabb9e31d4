#!/usr/bin/env bash
# Stops the test cluster that scripts/install-slurm.sh started: every job is cancelled, then the slurmd of
# each node and slurmctld, then slurmdbd and its MariaDB server (once slurmctld has sent it the jobs' last
# states), then munged are ended by the ids in their pid files, then whatever is still running inside a
# node's network namespace (a step that outlived its slurmstepd). Safe to run when nothing runs.
# The accounting database's data stays (under /var/spool/slurm-infer/db), with --purge too.
#
#   scripts/stop-slurm.sh           stop jobs and daemons; the node namespaces, bridge and /etc/hosts lines stay
#   scripts/stop-slurm.sh --purge   also remove the namespaces, the bridge and the /etc/hosts lines
set -euo pipefail

MARK="# slurm-infer test cluster"

# Ends the processes whose ids are given: TERM, up to 10 s, then KILL.
end() {
  local pids=("$@") alive
  [[ ${#pids[@]} -gt 0 ]] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    alive=()
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    [[ ${#alive[@]} -eq 0 ]] && return 0
    sleep 0.2
  done
  kill -KILL "${alive[@]}" 2>/dev/null || true
}

pid_of() {  # the pid in file $1 if that process is running $2
  local p
  [[ -s "$1" ]] || return 0
  p=$(<"$1")
  [[ "$p" =~ ^[0-9]+$ ]] && [[ "$(cat /proc/"$p"/comm 2>/dev/null)" == "$2" ]] && echo "$p"
  return 0
}

# Jobs first, while slurmctld and the slurmds can still end their steps (asked only of a running
# slurmctld: a client that finds none waits about 10 s before it gives up).
mapfile -t ctld < <(pid_of /run/slurmctld.pid slurmctld)
if [[ ${#ctld[@]} -gt 0 ]] && squeue --noheader >/dev/null 2>&1; then
  mapfile -t jobs < <(squeue --noheader --all --format=%A 2>/dev/null)
  if [[ ${#jobs[@]} -gt 0 ]]; then
    scancel "${jobs[@]}" 2>/dev/null || true
    for _ in $(seq 75); do [[ -z "$(squeue --noheader --all --format=%A 2>/dev/null)" ]] && break; sleep 0.2; done
  fi
fi

mapfile -t slurmds < <(for f in /run/slurmd-*.pid; do pid_of "$f" slurmd; done)
end "${slurmds[@]}" "${ctld[@]}"  # together: each takes a few seconds to shut down
mapfile -t dbd < <(pid_of /run/slurmdbd.pid slurmdbd)
end "${dbd[@]}"
mapfile -t mariadb < <(pid_of /run/slurm-infer-db/mariadbd.pid mariadbd)
end "${mariadb[@]}"
mapfile -t munge < <(pid_of /run/munge/munged.pid munged)
end "${munge[@]}"

# Leftovers inside the node namespaces (steps whose slurmstepd was killed).
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^slurm-n[0-9]+$/ {print $1}'); do
  mapfile -t left < <(ip netns pids "$ns" 2>/dev/null)
  end "${left[@]}"
done

if [[ "${1:-}" == --purge ]]; then
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^slurm-n[0-9]+$/ {print $1}'); do ip netns del "$ns"; done
  ip link del slurm-br 2>/dev/null || true
  if grep -q "$MARK" /etc/hosts; then
    kept=$(grep -v "$MARK" /etc/hosts)
    printf '%s\n' "$kept" >/etc/hosts  # in place: /etc/hosts may be a mount point
  fi
fi
echo "stop-slurm.sh: stopped"
