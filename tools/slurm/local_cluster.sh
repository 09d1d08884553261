#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine (loopback only) for the srun tests and CI, from
# Debian's slurm-wlm and munge packages (installed with apt-get when missing). Run as root.
#   local_cluster.sh start    install if needed, write configs, start munged, slurmctld, slurmd;
#                             wait until the node is idle (bounded), print how long it took
#   local_cluster.sh stop     stop what `start` started, by the process ids it recorded
#   local_cluster.sh status   what runs, and sinfo; exit 0 when the node answers
#   local_cluster.sh env      the line to source so srun/sinfo find this cluster:
#                             eval "$(tools/slurm/local_cluster.sh env)"
# State (configs, logs, spool, pid files) lives in $VOLT_SLURM_DIR (default /tmp/volt-slurm); the
# clients find it through SLURM_CONF=$VOLT_SLURM_DIR/slurm.conf. Ports: $VOLT_SLURM_PORT
# (slurmctld, default 6817) and the next one (slurmd). The node has max(8, 4 x nproc) CPUs so that
# `srun -n 3` runs on a 2-core machine; the partition allows oversubscription.
# srun starts OpenMPI ranks through PMIx (MpiDefault=pmix): `srun -n 2 ./program`.
set -euo pipefail

state="${VOLT_SLURM_DIR:-/tmp/volt-slurm}"
port="${VOLT_SLURM_PORT:-6817}"
conf="$state/slurm.conf"
wait_s="${VOLT_SLURM_WAIT:-60}"
export SLURM_CONF="$conf"

die() { echo "local_cluster: error: $*" >&2; exit 1; }
log() { echo "local_cluster: $*"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { cat "$state/pids/$1" 2>/dev/null || true; }

install_packages() {
  local need=() pkg
  for pkg in slurm-wlm munge openmpi-bin libopenmpi-dev; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

munge_works() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  # A munged that already answers (the system's) is used as it is and left alone by `stop`.
  if munge_works; then
    log "munged already answers on /run/munge; using it"
    return 0
  fi
  [ -f /etc/munge/munge.key ] || {
    log "creating the munge key /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else create-munge-key -f; fi
  }
  chown munge:munge /etc/munge /etc/munge/munge.key
  chmod 0700 /etc/munge
  chmod 0600 /etc/munge/munge.key
  # munged insists on its socket directory, log and pid files belonging to the munge user.
  mkdir -p /run/munge "$state/munge"
  chown munge:munge /run/munge "$state/munge"
  chmod 0755 /run/munge
  chmod 0700 "$state/munge"
  mkdir -p /var/lib/munge && chown munge:munge /var/lib/munge
  runuser -u munge -- munged --foreground --log-file="$state/munge/munged.log" \
    --pid-file="$state/munge/munged.pid" --seed-file="$state/munge/munged.seed" \
    </dev/null >>"$state/log/munged.out" 2>&1 &
  echo $! >"$state/pids/munged"
  local i
  for i in $(seq 1 50); do
    munge_works && return 0
    alive "$(pid_of munged)" || break
    sleep 0.2
  done
  tail -n 20 "$state/munge/munged.log" "$state/log/munged.out" >&2 2>/dev/null || true
  die "munged did not start (log above)"
}

write_config() {
  local host cpus
  host="$(hostname)"
  cpus=$(( $(nproc) * 4 ))
  [ "$cpus" -lt 8 ] && cpus=8
  mkdir -p "$state/spool/ctld" "$state/spool/d" "$state/log" "$state/run" "$state/pids"
  cat >"$conf" <<EOF
# Written by tools/slurm/local_cluster.sh: a one-node cluster on loopback.
ClusterName=volt-local
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${port}
SlurmdPort=$(( port + 1 ))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=60
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  cat >"$state/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
IgnoreSystemd=yes
EOF
}

node_state() { timeout 5 sinfo -h -N -o "%T" 2>/dev/null | head -n 1 || true; }

# A daemon ($1) exited while the cluster starts: its logs (either may not exist yet: tail then fails,
# which set -e must not turn into an exit that skips the rest), everything stopped, and the reason.
died_starting() {
  tail -n 30 "$state/log/$1.log" "$state/log/$1.out" >&2 2>/dev/null || true
  cmd_stop >/dev/null 2>&1 || true
  die "$1 exited (log above)"
}

cmd_start() {
  [ "$(id -u)" -eq 0 ] || die "run as root (slurmd and munged need it)"
  if alive "$(pid_of slurmctld)" && alive "$(pid_of slurmd)"; then
    log "already running (slurmctld $(pid_of slurmctld), slurmd $(pid_of slurmd)); SLURM_CONF=$conf"
    return 0
  fi
  # Half of an earlier start still running (one daemon died): stop it first, or it would hold its
  # port against the new one and outlive every later `stop`.
  if alive "$(pid_of slurmctld)" || alive "$(pid_of slurmd)"; then
    log "an earlier start is partly running: stopping it first"
    cmd_stop
  fi
  local t0 t1
  t0=$(date +%s%N)
  install_packages
  write_config
  start_munge
  slurmctld -D -c -f "$conf" </dev/null >>"$state/log/slurmctld.out" 2>&1 &
  echo $! >"$state/pids/slurmctld"
  slurmd -D -f "$conf" </dev/null >>"$state/log/slurmd.out" 2>&1 &
  echo $! >"$state/pids/slurmd"
  local deadline=$(( $(date +%s) + wait_s )) st=""
  while [ "$(date +%s)" -lt "$deadline" ]; do
    st="$(node_state)"
    case "$st" in idle*|mixed*|allocated*) break ;; esac
    alive "$(pid_of slurmctld)" || died_starting slurmctld
    alive "$(pid_of slurmd)" || died_starting slurmd
    sleep 0.5
  done
  case "$st" in
    idle*|mixed*|allocated*) ;;
    *)
      timeout 5 sinfo -R >&2 2>/dev/null || true
      tail -n 20 "$state/log/slurmctld.log" "$state/log/slurmd.log" >&2 2>/dev/null || true
      cmd_stop >/dev/null
      die "the node is not idle after ${wait_s} s (state: '${st:-no answer}'); logs above, in $state/log" ;;
  esac
  t1=$(date +%s%N)
  local ms=$(( (t1 - t0) / 1000000 ))
  log "up in $(( ms / 1000 )).$(( ms % 1000 / 100 )) s: node $(hostname) $st, $(sinfo -h -o '%c' | head -n1) CPUs; SLURM_CONF=$conf"
  log "srun MPI plugins: $(srun --mpi=list 2>&1 | tr -s '\n' ' ')"
}

stop_pid() {
  local name="$1" pid
  pid="$(pid_of "$name")"
  [ -n "$pid" ] || return 0
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do alive "$pid" || break; sleep 0.25; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    log "stopped $name ($pid)"
  fi
  rm -f "$state/pids/$name"
}

cmd_stop() {
  if alive "$(pid_of slurmctld)"; then
    local jobs
    jobs="$(timeout 5 squeue -h -o %i 2>/dev/null || true)"
    [ -n "$jobs" ] && timeout 10 scancel $jobs 2>/dev/null || true
  fi
  stop_pid slurmd
  stop_pid slurmctld
  stop_pid munged
  log "stopped (state kept in $state)"
}

cmd_status() {
  local name up=0
  for name in munged slurmctld slurmd; do
    local pid
    pid="$(pid_of "$name")"
    if alive "$pid"; then echo "$name: running ($pid)"; else echo "$name: not started by this script"; fi
  done
  if timeout 5 sinfo >/dev/null 2>&1; then
    timeout 5 sinfo
    up=1
  else
    echo "sinfo: no answer (SLURM_CONF=$conf)"
  fi
  [ "$up" -eq 1 ]
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
