#!/usr/bin/env bash
# A throw-away one-node SLURM cluster on this machine, for the tests of profiles/slurm.
#
#   cluster.sh install      install slurmctld, slurmd, the SLURM clients and munge with apt-get
#                           (nothing to do when they are present); exits 3 when it cannot
#   cluster.sh up DIR       configure and start munged, slurmctld and slurmd under DIR
#   cluster.sh down DIR     stop them again, by the PID files under DIR
#
# Everything lives under DIR: slurm.conf and gres.conf, a private munge key and socket, state,
# spool and logs; the system's munge key and socket are not used. One path outside DIR: the
# clients that the Snakemake plugin runs inside a job (srun) drop SLURM_CONF from their
# environment and read /etc/slurm/slurm.conf, so `up` links that to DIR/etc/slurm.conf and
# `down` removes the link. When the machine has a slurm.conf of its own, `up` exits 4 and
# changes nothing. Environment for `up`: SLURMCTLD_PORT and SLURMD_PORT (default 6817 and
# 6818), CI_GPUS (fake GPUs on the node, default 2), CI_PARTITION (default ci; it is not a
# default partition, so jobs must name it). Runs as root; the daemons run as root, no cgroups.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin  # the daemons, where a PATH lacks the admin folders

system_conf=/etc/slurm/slurm.conf

daemons=(slurmd slurmctld munged)

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
     command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  if [[ $(id -u) -ne 0 ]]; then echo "not root: cannot install SLURM" >&2; exit 3; fi
  if ! command -v apt-get >/dev/null; then echo "no apt-get: cannot install SLURM" >&2; exit 3; fi
  export DEBIAN_FRONTEND=noninteractive
  # Installing must not start the packages' own services: a policy-rc.d that says no, for the
  # length of the install, unless the machine already has one.
  local policy=/usr/sbin/policy-rc.d ours=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && ours=1
  fi
  local pkgs=(slurmctld slurmd slurm-client munge) status=0
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; } ||
    status=$?
  (( ours )) && rm -f "$policy"
  if (( status )); then echo "apt-get could not install ${pkgs[*]} (exit $status)" >&2; exit 3; fi
}

up() {
  local S=$1 ctld_port=${SLURMCTLD_PORT:-6817} slurmd_port=${SLURMD_PORT:-6818}
  local gpus=${CI_GPUS:-2} partition=${CI_PARTITION:-ci}
  mkdir -p "$S"/{etc,munge,run,state,spool,log,dev}
  chmod 700 "$S/munge"
  export SLURM_CONF=$S/etc/slurm.conf
  if [[ -L $system_conf && ! -e $system_conf ]]; then
    rm -f "$system_conf"  # the dangling link of a cluster whose DIR is gone
  fi
  if [[ -e $system_conf || -L $system_conf ]]; then
    echo "$system_conf exists: this machine has a SLURM configuration of its own" >&2
    exit 4
  fi
  mkdir -p "$(dirname "$system_conf")"
  ln -s "$SLURM_CONF" "$system_conf"

  dd if=/dev/urandom of="$S/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$S/munge/munge.key"
  # --force: munged wants a socket path that every user can traverse; DIR may sit under a
  # private (0700) temporary folder, which is fine as every client here runs as root.
  munged --socket="$S/run/munge.socket" --key-file="$S/munge/munge.key" \
    --pid-file="$S/run/munged.pid" --log-file="$S/log/munged.log" \
    --seed-file="$S/munge/seed" --force

  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 8 / 10 ))
  # Fake GPUs: gres/gpu wants one character device per GPU; nodes with the numbers of /dev/null
  # do (nothing opens them). Where mknod is not allowed, /dev/null itself is the one fake GPU.
  # A job given one sees CUDA_VISIBLE_DEVICES=0, its index within the job.
  local files=()
  for ((i = 0; i < gpus; i++)); do
    mknod -m 666 "$S/dev/gpu$i" c 1 3 2>/dev/null || break
    files+=("$S/dev/gpu$i")
  done
  (( ${#files[@]} == gpus )) || { files=(/dev/null); gpus=1; }
  cat > "$SLURM_CONF" <<CONF
ClusterName=comm-ci
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$S/run/munge.socket
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
# No accounting database: finished jobs are known to squeue --states=all for MinJobAge seconds,
# which the squeue status mode of the Snakemake plugin relies on.
MinJobAge=600
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$gpus State=UNKNOWN
PartitionName=$partition Nodes=localhost Default=NO MaxTime=60 State=UP
CONF
  local IFS=,
  printf 'AutoDetect=off\nNodeName=localhost Name=gpu File=%s\n' "${files[*]}" > "$S/etc/gres.conf"
  unset IFS

  slurmctld
  slurmd -N localhost   # the node's name in slurm.conf, whatever the machine's hostname
  local state=""
  for _ in $(seq 1 100); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 0.2
  done
  if [[ $state != idle ]]; then
    echo "node not idle (state: '${state}')" >&2
    scontrol show node localhost >&2 || true
    tail -n 30 "$S"/log/*.log >&2 || true
    exit 1
  fi
}

down() {
  local S=$1 name pid pids=()
  export SLURM_CONF=$S/etc/slurm.conf
  if [[ -s $S/run/slurmctld.pid ]]; then scancel --quiet --full --user="$(id -un)" 2>/dev/null || true; fi
  for name in "${daemons[@]}"; do
    [[ -s $S/run/$name.pid ]] || continue
    pid=$(<"$S/run/$name.pid")
    # Only the process this cluster started: the PID must still run that daemon.
    if [[ $(ps -o comm= -p "$pid" 2>/dev/null) == "$name" ]]; then
      kill "$pid" && pids+=("$pid") && echo "stopping $name ($pid)"
    fi
    rm -f "$S/run/$name.pid"
  done
  for _ in $(seq 1 100); do  # each takes a second or two; together, not one after the other
    local running=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running+=("$pid"); done
    pids=("${running[@]}")
    (( ${#pids[@]} )) || break
    sleep 0.1
  done
  (( ${#pids[@]} )) && kill -9 "${pids[@]}"
  if [[ -L $system_conf && $(readlink "$system_conf") == "$SLURM_CONF" ]]; then
    rm -f "$system_conf"
  fi
}

case ${1:-} in
  install) install ;;
  up) up "${2:?usage: cluster.sh up DIR}" ;;
  down) down "${2:?usage: cluster.sh down DIR}" ;;
  *) echo "usage: cluster.sh install | up DIR | down DIR" >&2; exit 2 ;;
esac
