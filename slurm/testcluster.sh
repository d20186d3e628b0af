#!/usr/bin/env bash
# A real Slurm on this one machine, for tests: munge, slurmctld and two slurmd
# as the nodes n1 and n2 (two CPUs and two stand-in GPUs each), all with
# their configuration, state, spool and logs in one private folder.
#
#   slurm/testcluster.sh start [DIR]   install Debian's Slurm if missing, start, wait for idle nodes
#   slurm/testcluster.sh stop [DIR]    stop what start started
#   slurm/testcluster.sh status [DIR]  exit 0 when slurmctld and every slurmd run
#   slurm/testcluster.sh env [DIR]     print the SLURM_CONF line that points clients at it
#
# DIR defaults to $ZD_SLURM_DIR or /tmp/zd-slurm. Starting a running cluster is
# a no-op. Needs root (slurmd runs as root to launch tasks as any user). Ports:
# slurmctld $ZD_SLURM_PORT (default 16817), the nodes the two after 17000
# ($ZD_SLURMD_PORT default 17001, 17002), away from a system Slurm's defaults.
set -euo pipefail

action=${1:-}
dir=${2:-${ZD_SLURM_DIR:-/tmp/zd-slurm}}
ctld_port=${ZD_SLURM_PORT:-16817}
node_port=${ZD_SLURMD_PORT:-17001}
nodes=(n1 n2)
conf=$dir/etc/slurm.conf
export SLURM_CONF=$conf

log() { echo "testcluster: $*"; }
die() {
	echo "testcluster: $*" >&2
	exit 1
}

# install_slurm installs Debian's (or Ubuntu's) Slurm and munge when any of
# their programs is missing; the packages create the slurm and munge users and
# the munge key.
install_slurm() {
	local missing=0 p
	for p in munged munge slurmctld slurmd sbatch srun scontrol sinfo; do
		command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] || missing=1
	done
	[ "$missing" = 0 ] && return
	[ "$(id -u)" = 0 ] || die "Slurm is not installed and installing it needs root"
	command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get to install it"
	log "installing slurmctld slurmd slurm-client munge"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

# write_config writes slurm.conf, cgroup.conf and gres.conf. Each node has two
# stand-in GPUs so that #SBATCH --gpus-per-task=1 is accepted as on a GPU
# cluster and Slurm sets CUDA_VISIBLE_DEVICES per task: slurmd drops a GPU
# without a device file, and any character device serves, so they are
# /dev/null and /dev/zero (nothing opens them; task/none confines nothing).
write_config() {
	local host n port=$node_port
	host=$(hostname -s)
	mkdir -p "$dir"/etc "$dir"/state "$dir"/log "$dir"/run
	for n in "${nodes[@]}"; do mkdir -p "$dir/spool/$n"; done
	{
		cat <<EOF
ClusterName=zdtest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
GresTypes=gpu
KillWait=10
MinJobAge=600
EOF
		for n in "${nodes[@]}"; do
			echo "NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1 Port=$port CPUs=2 RealMemory=2000 Gres=gpu:2 State=UNKNOWN"
			port=$((port + 1))
		done
		echo "PartitionName=test Nodes=$(
			IFS=,
			echo "${nodes[*]}"
		) Default=YES MaxTime=INFINITE State=UP"
	} >"$conf.tmp"
	mv "$conf.tmp" "$conf"
	echo "CgroupPlugin=cgroup/v1" >"$dir/etc/cgroup.conf"
	echo "Name=gpu File=/dev/null,/dev/zero" >"$dir/etc/gres.conf"
}

# hosts_mark ends the /etc/hosts line that makes the node names resolve.
hosts_mark="# zerodiff test cluster ($dir)"

# name_nodes makes the node names resolve to this machine, as node names do on
# a cluster: launch reaches rank 0's rendezvous through the first name of
# SLURM_STEP_NODELIST. Only names that do not resolve yet are added.
name_nodes() {
	local n missing=()
	for n in "${nodes[@]}"; do getent hosts "$n" >/dev/null || missing+=("$n"); done
	[ "${#missing[@]}" = 0 ] && return
	log "adding ${missing[*]} to /etc/hosts"
	echo "127.0.0.1 ${missing[*]} $hosts_mark" >>/etc/hosts
}

# unname_nodes removes the line name_nodes added, rewriting /etc/hosts in
# place (in a container it is often a bind mount, which cannot be replaced).
unname_nodes() {
	grep -qF "$hosts_mark" /etc/hosts || return 0
	local kept
	kept=$(grep -vF "$hosts_mark" /etc/hosts)
	printf '%s\n' "$kept" >/etc/hosts
}

# alive reports whether the pid in file $1 is a running process.
alive() {
	[ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_munge() {
	if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
		return
	fi
	log "starting munged"
	install -d -o munge -g munge -m 0755 /run/munge
	runuser -u munge -- /usr/sbin/munged
	touch "$dir/run/munged.ours"
	for _ in $(seq 50); do
		munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
		sleep 0.1
	done
	die "munged did not answer within 5 s"
}

# wait_idle waits (at most 30 s) until every node is idle; a node left down or
# drained by an earlier run is resumed once.
wait_idle() {
	local _ states resumed=0
	for _ in $(seq 60); do
		states=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u || true)
		if [ -n "$states" ] && ! grep -qv ' idle$' <<<"$states"; then
			[ "$(wc -l <<<"$states")" -eq "${#nodes[@]}" ] && return
		fi
		if grep -q ' inval' <<<"$states"; then
			die "a node refused its configuration: $(grep -m1 'INVAL' "$dir/log/slurmctld.log")"
		fi
		if [ "$resumed" = 0 ] && grep -Eq ' (down|drain|drng)\*?$' <<<"$states"; then
			scontrol update NodeName="$(
				IFS=,
				echo "${nodes[*]}"
			)" State=RESUME 2>/dev/null || true
			resumed=1
		fi
		sleep 0.5
	done
	die "nodes not idle after 30 s: $(tr '\n' ' ' <<<"$states"); logs in $dir/log"
}

start() {
	install_slurm
	[ "$(id -u)" = 0 ] || die "the test cluster's daemons run as root"
	write_config
	name_nodes
	start_munge
	if ! alive "$dir/run/slurmctld.pid"; then
		log "starting slurmctld on port $ctld_port"
		slurmctld -f "$conf" || die "slurmctld did not start; see $dir/log/slurmctld.log"
	fi
	local n
	for n in "${nodes[@]}"; do
		if ! alive "$dir/run/slurmd-$n.pid"; then
			log "starting slurmd $n"
			slurmd -f "$conf" -N "$n" || die "slurmd $n did not start; see $dir/log/slurmd-$n.log"
		fi
	done
	wait_idle
	log "up: nodes ${nodes[*]} idle; clients need: export SLURM_CONF=$conf"
}

# stop_pid sends TERM to the process in pid file $1 and waits up to 10 s.
stop_pid() {
	local f=$1 pid _
	alive "$f" || return 0
	pid=$(cat "$f")
	kill "$pid"
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	die "process $pid ($f) still running 10 s after SIGTERM"
}

stop() {
	local n
	for n in "${nodes[@]}"; do stop_pid "$dir/run/slurmd-$n.pid"; done
	stop_pid "$dir/run/slurmctld.pid"
	if [ -e "$dir/run/munged.ours" ]; then
		stop_pid /run/munge/munged.pid
		rm -f "$dir/run/munged.ours"
	fi
	unname_nodes
	log "stopped"
}

case $action in
start) start ;;
stop) stop ;;
status)
	alive "$dir/run/slurmctld.pid" || exit 1
	for n in "${nodes[@]}"; do alive "$dir/run/slurmd-$n.pid" || exit 1; done
	;;
env) echo "export SLURM_CONF=$conf" ;;
*) die "usage: $0 start|stop|status|env [DIR]" ;;
esac
