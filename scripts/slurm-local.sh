#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests and for trying `snakemake --profile slurm`.
#
#   scripts/slurm-local.sh start  [STATE_DIR]   start munge (if not running), slurmctld, slurmd; wait until idle
#   scripts/slurm-local.sh stop   [STATE_DIR]   cancel this cluster's jobs, stop the daemons by their pid files
#   scripts/slurm-local.sh status [STATE_DIR]   exit 0 when the cluster answers, 1 otherwise
#
# STATE_DIR (or $TOKENFAIR_SLURM_DIR; default ${TMPDIR:-/tmp}/tokenfair-slurm) holds the spool folders, logs,
# pid files and the fake GPU device links. The config goes where every SLURM command looks without help,
# /etc/slurm/slurm.conf and gres.conf (SLURM_CONF does not reach the job steps: the executor's jobstep plugin
# drops SLURM_* variables before its srun); a slurm.conf this script did not write is never overwritten.
# Needs root and Debian's `slurm-wlm munge` (slurm 22.05).
#
# The node offers $TOKENFAIR_SLURM_CPUS (8) CPUs and at least 16 GB, oversubscribing a smaller machine, and has
# $TOKENFAIR_SLURM_GPUS (2) fake GPUs of type $TOKENFAIR_SLURM_GPU_TYPE (a100): gres entries
# whose File= are symlinks to /dev/null, so `--gpus=1` jobs schedule and get CUDA_VISIBLE_DEVICES, without a
# GPU; each is split into $TOKENFAIR_SLURM_SHARDS (4) gres/shard entries (jobs sharing a GPU). Partitions: `cpu` (default) and `gpu`, both on this node. AuthInfo cred_expire is short
# ($TOKENFAIR_SLURM_CRED_EXPIRE, 10 s) so a requeued job starts again after seconds, not two minutes.
# Starting an already running cluster does nothing; a second cluster on other ports is not supported.
set -euo pipefail

cmd=${1:-}
STATE=${2:-${TOKENFAIR_SLURM_DIR:-${TMPDIR:-/tmp}/tokenfair-slurm}}
GPUS=${TOKENFAIR_SLURM_GPUS:-2}
GPU_TYPE=${TOKENFAIR_SLURM_GPU_TYPE:-a100}
SHARDS=${TOKENFAIR_SLURM_SHARDS:-4}  # gres/shard per GPU: jobs sharing one GPU (resources.gpu_shards)
CRED_EXPIRE=${TOKENFAIR_SLURM_CRED_EXPIRE:-10}
CPUS=${TOKENFAIR_SLURM_CPUS:-8}
ETC=/etc/slurm
CONF="$ETC/slurm.conf"
MARK="# written by scripts/slurm-local.sh"

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }

alive() {  # alive PIDFILE: the pid in it is a running process
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, wait up to 10 s, then SIGKILL
  local name=$1 pidfile=$2 pid
  if ! alive "$pidfile"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid"
    say "stopped $name (pid $pid, killed)"
  else
    say "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

cluster_up() {
  alive "$STATE/slurmctld.pid" && alive "$STATE/slurmd.pid" && sinfo -h >/dev/null 2>&1
}

wait_idle() {  # the node is schedulable (idle, mixed or allocated), up to 30 s
  local state
  for _ in $(seq 60); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
    case "$state" in idle|mixed|allocated) return 0 ;; esac
    sleep 0.5
  done
  sinfo -N -l >&2 || true
  die "the node did not become idle in 30 s (state: ${state:-none}); see $STATE/log/"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munge already running"
    return 0
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
    say "created /etc/munge/munge.key"
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || die "munged started but does not answer"
  cp /run/munge/munged.pid "$STATE/munged.pid"  # ours: `stop` ends it
  say "started munged (pid $(cat "$STATE/munged.pid"))"
}

write_config() {
  local host mem
  host=$(hostname -s)
  # RealMemory: half of the available memory, at least 16 GB: like the CPUs, only bookkeeping (nothing
  # enforces it here), so a small CI machine still takes the jobs' --mem requests.
  mem=$(( $(awk '/MemAvailable/{print int($2/1024)}' /proc/meminfo) / 2 ))
  [ "$mem" -ge 16384 ] || mem=16384
  if [ -e "$CONF" ] && ! head -1 "$CONF" | grep -qF "$MARK"; then
    die "$CONF exists and was not written by this script (a real cluster's?); not overwriting it"
  fi
  mkdir -p "$ETC" "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/log" "$STATE/dev"
  for i in $(seq 0 $((GPUS - 1))); do
    ln -sfn /dev/null "$STATE/dev/fakegpu$i"  # gres/gpu needs device files; /dev/null passes the check
  done
  cat >"$CONF" <<CONF
$MARK: a one-node test cluster with $GPUS fake $GPU_TYPE GPUs, state in $STATE
ClusterName=tokenfair
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=${CRED_EXPIRE}
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
# pending jobs are looked at every 2 s (default 60): a requeued job starts once it is eligible again
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job without --mem gets this per CPU, not the whole node
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# the node offers ${CPUS} CPUs whatever the machine has (jobs of a few threads fit on a small CI machine)
SlurmdParameters=config_overrides
MpiDefault=none
# squeue (the profile's status command) must still list a finished job when snakemake asks
MinJobAge=300
KillWait=30
JobRequeue=1
GresTypes=gpu,shard
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${mem} Gres=gpu:${GPU_TYPE}:${GPUS},shard:$((GPUS * SHARDS)) State=UNKNOWN
PartitionName=cpu Nodes=${host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=${host} Default=NO MaxTime=INFINITE State=UP
CONF
  cat >"$ETC/gres.conf" <<CONF
$MARK
AutoDetect=off
NodeName=${host} Name=gpu Type=${GPU_TYPE} File=$STATE/dev/fakegpu[0-$((GPUS - 1))]
$(for ((i = 0; i < GPUS; i++)); do echo "NodeName=${host} Name=shard Count=${SHARDS} File=$STATE/dev/fakegpu$i"; done)
CONF
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (slurmd runs jobs as their users)"
  for b in slurmctld slurmd sinfo sbatch munged; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] ||
      die "$b not found: install SLURM first (Debian/Ubuntu: apt-get install -y slurm-wlm munge)"
  done
  mkdir -p "$STATE"
  if cluster_up; then
    wait_idle
    say "already running (state $STATE)"
    return 0
  fi
  if pgrep -x slurmctld >/dev/null 2>&1 && ! alive "$STATE/slurmctld.pid"; then
    die "another slurmctld is running on this machine (not ours: $STATE/slurmctld.pid); stop it first"
  fi
  # half-started leftovers of an earlier run
  stop_pid slurmd "$STATE/slurmd.pid"
  stop_pid slurmctld "$STATE/slurmctld.pid"
  start_munge
  write_config
  say "wrote $CONF and $ETC/gres.conf ($CPUS CPUs, $GPUS fake $GPU_TYPE GPUs, partitions cpu (default) and gpu)"
  /usr/sbin/slurmctld -c  # -c: clear saved state, a fresh cluster; daemonizes
  say "started slurmctld (pid $(cat "$STATE/slurmctld.pid"))"
  for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
  /usr/sbin/slurmd
  for _ in $(seq 50); do alive "$STATE/slurmd.pid" && break; sleep 0.1; done
  alive "$STATE/slurmd.pid" || die "slurmd did not start; see $STATE/log/slurmd.log"
  say "started slurmd (pid $(cat "$STATE/slurmd.pid"))"
  wait_idle
  sinfo -o '%P %a %D %T %G'
}

stop() {
  if alive "$STATE/slurmctld.pid"; then
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 50); do [ -z "$(squeue -h -t R,CG -o %i 2>/dev/null)" ] && break; sleep 0.2; done
      say "cancelled jobs: $(echo $jobs)"
    fi
  fi
  stop_pid slurmd "$STATE/slurmd.pid"
  stop_pid slurmctld "$STATE/slurmctld.pid"
  stop_pid munged "$STATE/munged.pid"  # only when this script started it
  say "stopped (state kept in $STATE)"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status)
    if cluster_up; then sinfo -o '%P %a %D %T %G'; else say "not running (state $STATE)"; exit 1; fi ;;
  *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac
