#!/usr/bin/env bash
# make test-slurm: the sbatch scripts on a real Slurm of two nodes on this
# machine (slurm/testcluster.sh), in two parts.
#
#   script  train.sbatch with the stand-ins of slurm/standin/ for launch and
#           train: 2 nodes × 2 tasks, one GPU and one rank each, one secret for
#           all; then USR1 to the batch shell mid-run → every rank exits 75 →
#           requeue → the second run resumes where the first stopped and
#           finishes; scancel → every rank checkpoints, and the job stays
#           cancelled; scontrol requeue → every rank checkpoints, the script
#           says Slurm requeued the job, which resumes; one launcher failing
#           before the rendezvous → the step and the job end within seconds;
#           a partition (n2's step daemon stopped, every rank killed) → srun
#           gives up on n2 and the job stops running within two minutes.
#           Tests the script's own logic in about three minutes.
#   chain   the real binaries: prep.sbatch makes the demo shards; train.sbatch
#           trains the demo on 2 nodes × 2 tasks with ZeRO-2 and leaves a
#           complete checkpoint of 4 parts; a second run stopped by USR1 is
#           requeued, resumes from its checkpoint and finishes; a third job
#           continues that run on 2 ranks at the data position where it
#           stopped (log.jsonl's epoch and sample of every step are those of
#           one continuous stream); ckpt merge and sample.sbatch turn it into
#           an image.
#
#   slurm/test.sh [script|chain|all]      (default all; run from anywhere)
#
# Every wait is bounded. Jobs log to a temporary folder, kept when a check
# fails. The cluster is stopped at the end if this script started it.
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${1:-all}
case $parts in script | chain | all) ;; *)
	echo "usage: $0 [script|chain|all]" >&2
	exit 2
	;;
esac

work=$(mktemp -d /tmp/zd-slurm-test.XXXXXX)
mkdir -p "$work/logs"
cluster_dir=${ZD_SLURM_DIR:-/tmp/zd-slurm}
export SLURM_CONF=$cluster_dir/etc/slurm.conf
started=0
jobs_submitted=()
stopped_stepd=
log=
t0=$(date +%s)

say() { echo "test-slurm: [$(($(date +%s) - t0)) s] $*"; }
fail() {
	echo "test-slurm: FAIL: $*" >&2
	if [ -n "$log" ] && [ -e "$log" ]; then
		echo "--- last lines of $log" >&2
		tail -n 30 "$log" >&2
	fi
	echo "--- job logs kept in $work; cluster logs in $cluster_dir/log" >&2
	exit 1
}
cleanup() {
	local rc=$? id
	[ -n "$stopped_stepd" ] && kill -CONT "$stopped_stepd" 2>/dev/null
	for id in "${jobs_submitted[@]}"; do scancel "$id" 2>/dev/null || true; done
	[ "$started" = 1 ] && slurm/testcluster.sh stop "$cluster_dir" >/dev/null
	[ "$rc" = 0 ] && rm -rf "$work"
	return "$rc"
}
trap cleanup EXIT

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.5 s.
wait_until() {
	local limit=$1 what=$2 end
	shift 2
	end=$(($(date +%s) + limit))
	until "$@"; do
		(($(date +%s) < end)) || fail "$what: not within $limit s"
		sleep 0.5
	done
}

# job_field ID FIELD prints a field of `scontrol show job`, e.g. JobState.
job_field() {
	scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# submit SCRIPT [SBATCH_OPTIONS...] -- [SCRIPT_ARGS...]: submits; sets job (the
# id) and log (its output file). The log goes to the work folder, or where the
# script's own #SBATCH --output says when own_log=1.
own_log=0
submit() {
	local script=$1 name out opts=()
	shift
	while [ "$1" != -- ]; do
		opts+=("$1")
		shift
	done
	shift
	name=$(sed -n 's/^#SBATCH --job-name=//p' "$script")
	out=$work/logs/%x-%j.out
	[ "$own_log" = 1 ] && out=$(sed -n 's/^#SBATCH --output=//p' "$script")
	job=$(sbatch --parsable --output="$out" "${opts[@]}" "$script" "$@")
	jobs_submitted+=("$job")
	log=${out//%x/$name}
	log=${log//%j/$job}
}

# ended ID: the job is over for good (a requeued job passes through REQUEUED
# and PENDING, which are not ends).
ended() {
	case $(job_field "$1" JobState) in
	COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED) return 0 ;;
	*) return 1 ;;
	esac
}

# finish SECONDS waits for the job's end and demands COMPLETED with exit code
# 0. (It polls rather than using sbatch --wait, whose polling interval grows
# to several seconds.)
finish() {
	wait_until "$1" "job $job ending (now $(job_field "$job" JobState))" ended "$job"
	local state code
	state=$(job_field "$job" JobState)
	code=$(job_field "$job" ExitCode)
	if [ "$state" != COMPLETED ] || [ "$code" != 0:0 ]; then
		fail "job $job ended $state with exit code $code"
	fi
}

# log_has PATTERN [COUNT]: the job log has at least COUNT lines matching the
# extended regular expression PATTERN.
# resumed_where_stopped checks that every rank of the stand-in resumed at the
# step its checkpoint holds, one of 1 or more (the ranks step on their own
# clocks, so each stops at its own step).
resumed_where_stopped() {
	local r stopped resumed
	for r in 0 1 2 3; do
		stopped=$(grep -m1 -oE "^rank $r: stopped by signal at step [0-9]+" "$log" | grep -oE '[0-9]+$' || true)
		resumed=$(grep -m1 -oE "^rank $r: resumed from .* at step [0-9]+$" "$log" | grep -oE '[0-9]+$' || true)
		[ -n "$stopped" ] && [ "$stopped" -ge 1 ] && [ "$resumed" = "$stopped" ] ||
			fail "job $job: rank $r stopped at step '${stopped}' and resumed at step '${resumed}', want the same step, 1 or more"
	done
}
log_has() {
	local n
	n=$(grep -cE -- "$1" "$log" 2>/dev/null || true)
	((n >= ${2:-1}))
}
expect_log() {
	log_has "$@" || fail "job $job: log lacks ${2:-1} line(s) matching '$1'"
}

# requeued ID: the job is pending again after its first run.
requeued() {
	[ "$(job_field "$1" Restarts)" = 1 ] && [ "$(job_field "$1" JobState)" = PENDING ]
}

# stop_and_requeue waits until the job's log shows PATTERN, sends USR1 to the
# batch shell (as --signal=B:USR1@120 does before the time limit), waits for
# the requeue and lets the job start again 3 s later instead of the two
# minutes Slurm holds a requeued job back (its BeginTime). Not at once: slurmd
# refuses a start in the same second as the requeue revoked the job's
# credential ("Job credential revoked"), and the job fails.
stop_and_requeue() {
	wait_until 120 "job $job: log line '$1'" log_has "$1"
	say "job $job: USR1 to the batch shell"
	scancel --signal=USR1 --batch "$job"
	wait_until 60 "job $job: requeue" requeued "$job"
	scontrol update JobId="$job" StartTime=now+3
	say "job $job: requeued"
}

# Slurm opens --output before the script runs: the folder each script names
# must be in the repository.
for f in slurm/*.sbatch; do
	out=$(sed -n 's/^#SBATCH --output=//p' "$f")
	[ -d "$(dirname "$out")" ] || fail "$f: log folder $(dirname "$out") of --output=$out is missing"
done

slurm/testcluster.sh status "$cluster_dir" || started=1
slurm/testcluster.sh start "$cluster_dir"
for id in $(squeue -h -o %i); do scancel "$id"; done
# Both nodes on this one machine, 2 CPUs each: one CPU per task.
two_by_two=(--nodes=2 --ntasks-per-node=2 --cpus-per-task=1)

test_script() {
	local out=$work/standin a b
	say "script: train.sbatch with stand-ins, 2 nodes × 2 tasks, its log where its #SBATCH --output says"
	own_log=1
	submit slurm/train.sbatch "${two_by_two[@]}" --export=ALL,ZERODIFF_BIN=slurm/standin -- \
		none --output-dir "$out/a" --max-train-steps 5
	own_log=0
	finish 60
	for r in 0 1 2 3; do
		expect_log "^standin launch: rank $r of 4, local rank $((r % 2)) on n$((r / 2 + 1)), CUDA_VISIBLE_DEVICES=$((r % 2))$"
		[ "$(cat "$out/a/rank-$r.step")" = 5 ] || fail "stand-in rank $r did not reach step 5"
	done
	[ "$(sort -u "$out"/a/secret-* | wc -l)" = 1 ] || fail "the ranks got different ZERODIFF_SECRETs"
	expect_log '^train\.sbatch: training finished'
	rm "$log"
	say "script: ok: 4 ranks on n1 and n2, one GPU each, one secret, the log in slurm/logs/"

	submit slurm/train.sbatch "${two_by_two[@]}" --export=ALL,ZERODIFF_BIN=slurm/standin -- \
		none --output-dir "$out/b" --max-train-steps 40
	stop_and_requeue '^step 5/40$'
	a=$(cat "$out/b/secret-0")
	wait_until 60 "job $job: second run" log_has '^train\.sbatch: job [0-9]+ run 2,'
	finish 60
	expect_log '^train\.sbatch: SIGUSR1 at '
	expect_log 'stopped by signal at step [0-9]+; checkpoint written, exiting with code 75' 4
	expect_log '^train\.sbatch: stopped with code 75 after SIGUSR1 and its checkpoint; requeueing job'
	resumed_where_stopped
	expect_log '^step 40/40$'
	expect_log '^train\.sbatch: training finished'
	[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: $(job_field "$job" Restarts) restarts, want 1"
	b=$(cat "$out/b/secret-0")
	[ "$(sort -u "$out"/b/secret-* | wc -l)" = 1 ] || fail "the ranks of the second run got different ZERODIFF_SECRETs"
	[ "$a" != "$b" ] || fail "the requeued run kept the first run's ZERODIFF_SECRET"
	say "script: ok: USR1 → exit 75 on every rank → requeue → resumed $(grep -m1 -oE 'at step [0-9]+$' "$log") → finished"

	submit slurm/train.sbatch "${two_by_two[@]}" --export=ALL,ZERODIFF_BIN=slurm/standin -- \
		none --output-dir "$out/c" --max-train-steps 40
	wait_until 60 "job $job: log line 'step 3/40'" log_has '^step 3/40$'
	scancel "$job"
	wait_until 30 "job $job ending after scancel" ended "$job"
	[ "$(job_field "$job" JobState)" = CANCELLED ] || fail "job $job: $(job_field "$job" JobState) after scancel, want CANCELLED"
	[ "$(job_field "$job" Restarts)" = 0 ] || fail "job $job was requeued after scancel"
	expect_log 'exiting with code 75' 4
	expect_log '^train\.sbatch: stopped by SIGTERM after the checkpoint; resubmit'
	say "script: ok: scancel → every rank checkpoints → cancelled, not requeued"

	submit slurm/train.sbatch "${two_by_two[@]}" --export=ALL,ZERODIFF_BIN=slurm/standin -- \
		none --output-dir "$out/e" --max-train-steps 40
	wait_until 60 "job $job: log line 'step 3/40'" log_has '^step 3/40$'
	say "job $job: scontrol requeue"
	scontrol requeue "$job"
	wait_until 60 "job $job: requeue" requeued "$job"
	scontrol update JobId="$job" StartTime=now+3
	wait_until 60 "job $job: second run" log_has '^train\.sbatch: job [0-9]+ run 2,'
	finish 60
	expect_log 'exiting with code 75' 4
	expect_log '^train\.sbatch: stopped with code 75 after SIGTERM and its checkpoint; Slurm has requeued job [0-9]+, which resumes from it$'
	! log_has 'resubmit|requeueing job' || fail "job $job: the script asked for a resubmit or requeued again after scontrol requeue"
	resumed_where_stopped
	[ "$(job_field "$job" Restarts)" = 1 ] || fail "job $job: $(job_field "$job" Restarts) restarts, want 1"
	say "script: ok: scontrol requeue → every rank checkpoints → Slurm's requeue → resumed → finished"

	local t
	submit slurm/train.sbatch "${two_by_two[@]}" --export=ALL,ZERODIFF_BIN=slurm/standin,ZD_STANDIN_FAIL_RANK=3 -- \
		none --output-dir "$out/f" --max-train-steps 5
	t=$(date +%s)
	# The others' launchers wait 300 s for rank 3; 30 s is srun ending the step
	# at once, plus Slurm's own start and cleanup on a loaded machine.
	wait_until 30 "job $job ending after rank 3's launcher failed" ended "$job"
	[ "$(job_field "$job" JobState)" = FAILED ] || fail "job $job: $(job_field "$job" JobState), want FAILED"
	[ "$(job_field "$job" Restarts)" = 0 ] || fail "job $job was requeued after a launcher failed"
	expect_log 'standin launch: rank 3 on n2 cannot join the rendezvous'
	say "script: ok: rank 3's launcher failed before the rendezvous → the job ended in $(($(date +%s) - t)) s"

	# A partition, as srun sees it: n2's step daemon stops answering (SIGSTOP)
	# and every rank dies (SIGKILL), so that srun hears only n1's exits.
	local sd n n1_stepd='' n2_stepd='' task
	submit slurm/train.sbatch "${two_by_two[@]}" --export=ALL,ZERODIFF_BIN=slurm/standin -- \
		none --output-dir "$out/g" --max-train-steps 400
	wait_until 60 "job $job: log line 'step 3/400'" log_has '^step 3/400$'
	for sd in $(pgrep -f "slurmstepd: \[$job\.0\]"); do
		task=$(pgrep -P "$sd" | head -n 1)
		n=$(tr '\0' '\n' <"/proc/$task/environ" | sed -n 's/^SLURMD_NODENAME=//p')
		case $n in n1) n1_stepd=$sd ;; n2) n2_stepd=$sd ;; esac
	done
	[ -n "$n1_stepd" ] && [ -n "$n2_stepd" ] || fail "job $job: no step daemons of step $job.0 on n1 and n2"
	say "job $job: partition: n2's step daemon stopped, every rank killed"
	stopped_stepd=$n2_stepd
	kill -STOP "$n2_stepd"
	for task in $(pgrep -P "$n2_stepd") $(pgrep -P "$n1_stepd"); do kill -KILL "$task"; done
	t=$(date +%s)
	# srun's --wait=60 after the first exit, and its own 12 s wait for the
	# step to end; 120 s leaves room on a loaded machine, and is far below
	# the wait without them (until Slurm declares n2 down, minutes).
	wait_until 120 "job $job leaving RUNNING after every rank died" not_running "$job"
	say "script: ok: partition → the job stopped running after $(($(date +%s) - t)) s"
	kill -CONT "$n2_stepd"
	stopped_stepd=''
	wait_until 60 "job $job ending after n2's step daemon resumed" ended "$job"
}

# not_running ID: the job is no longer RUNNING (COMPLETING, or ended).
not_running() {
	[ "$(job_field "$1" JobState)" != RUNNING ]
}

# position DIR STEP prints "EPOCH SAMPLE" of STEP's line in DIR/log.jsonl.
position() {
	sed -n "s/^{\"step\":$2,\"epoch\":\([0-9]*\),.*\"sample\":\([0-9]*\)[,}].*/\1 \2/p" "$1/log.jsonl" | tail -n 1
}

# check_positions DIR FROM TO BATCH RECORDS: the steps FROM+1..TO of DIR's
# log.jsonl read the data as one continuous stream from step FROM's position
# (the start for 0): BATCH samples a step, and a new epoch when the next step
# no longer fits in RECORDS (train drops an epoch's last partial batch).
check_positions() {
	local dir=$1 from=$2 to=$3 batch=$4 records=$5 e=0 s=0 k got
	if ((from > 0)); then
		got=$(position "$dir" "$from")
		[ -n "$got" ] || fail "$dir/log.jsonl: no epoch and sample for step $from (does train log \"sample\"?)"
		read -r e s <<<"$got"
	fi
	for ((k = from + 1; k <= to; k++)); do
		((s + batch <= records)) || e=$((e + 1)) s=0
		s=$((s + batch))
		got=$(position "$dir" "$k")
		[ "$got" = "$e $s" ] || fail "$dir/log.jsonl: step $k at epoch and sample '${got:-none}', want '$e $s', the continuous order"
	done
}

test_chain() {
	local data=$work/demo ck steps tool records
	for tool in prep launch train ckpt sample; do
		[ -x "bin/$tool" ] || fail "bin/$tool is missing: run make build first"
	done
	say "chain: prep.sbatch, the demo data set"
	submit slurm/prep.sbatch --cpus-per-task=2 -- \
		--dataset demo --out "$data/shards" --model "$data/model" --demo-samples 256
	finish 120
	[ -s "$data/shards/index.json" ] || fail "prep wrote no $data/shards/index.json"

	local demo=(--pretrained-model-name-or-path "$data/model" --unet-config "$data/model/unet/config.json"
		--dataset-dir "$data/shards" --train-micro-batch-size-per-gpu 4 --zero-optimization-stage 2
		--log-interval 1 --save-interval 4)
	say "chain: train.sbatch, the demo on 2 nodes × 2 tasks, ZeRO-2, 8 steps"
	submit slurm/train.sbatch "${two_by_two[@]}" -- configs/demo.json "${demo[@]}" \
		--output-dir "$work/run1" --max-train-steps 8
	finish 180
	ck=$work/run1/checkpoints/step-000008
	[ -s "$ck/manifest.json" ] || fail "no checkpoint manifest $ck/manifest.json"
	grep -qE '"world_size": *4' "$ck/manifest.json" || fail "$ck/manifest.json: world_size is not 4"
	for r in 0 1 2 3; do
		[ -s "$ck/rank-0000$r.safetensors" ] || fail "$ck: no part of rank $r"
	done
	bin/ckpt verify "$ck" >/dev/null || fail "ckpt verify $ck"
	expect_log '^launch: 4 ranks on 2 nodes \(slurm\)'
	expect_log ' on 4 rank\(s\), ZeRO stage 2, from step 0$'
	expect_log '^step 8/8 '
	expect_log '^train\.sbatch: training finished'
	say "chain: ok: 4 ranks on 2 nodes, a complete checkpoint of 4 parts at step 8"

	steps=24
	say "chain: train.sbatch, $steps steps stopped by USR1, requeued and resumed"
	submit slurm/train.sbatch "${two_by_two[@]}" -- configs/demo.json "${demo[@]}" \
		--output-dir "$work/run2" --max-train-steps "$steps"
	stop_and_requeue '^step 3/'
	wait_until 60 "job $job: second run" log_has '^train\.sbatch: job [0-9]+ run 2,'
	finish 300
	expect_log '^train\.sbatch: stopped with code 75 after SIGUSR1 and its checkpoint; requeueing job'
	! log_has 'code 75: stopping all ranks' || fail "job $job: launch logged the planned stop (code 75) as a failure"
	expect_log "^resumed from .*/run2/checkpoints/step-[0-9]+ at step ([3-9]|1[0-9]|2[0-3]) "
	expect_log "^step $steps/$steps "
	expect_log '^train\.sbatch: training finished'
	say "chain: ok: $(grep -m1 -E '^resumed from' "$log")"

	say "chain: train.sbatch on 1 node × 2 tasks continues that run to step $((steps + 4))"
	# The global batch halves with the ranks, which train takes only when told.
	submit slurm/train.sbatch --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 -- configs/demo.json "${demo[@]}" \
		--output-dir "$work/run2" --max-train-steps $((steps + 4)) --resume-allow-changes
	finish 120
	expect_log "^resumed from .*/run2/checkpoints/$(printf step-%06d "$steps") at step $steps \\(.*written by 4 rank\\(s\\), read by 2\\)"
	expect_log "^step $((steps + 4))/$((steps + 4)) "
	# 4 samples per rank and step: 16 a step on 4 ranks, then 8 on 2.
	# The index's first "records" is its total (each shard's come after it).
	records=$(grep -oE '"records": *[0-9]+' "$data/shards/index.json" | head -n 1 | grep -oE '[0-9]+$')
	check_positions "$work/run2" 0 "$steps" 16 "$records"
	check_positions "$work/run2" "$steps" $((steps + 4)) 8 "$records"
	say "chain: ok: $(grep -m1 -E '^resumed from' "$log"), at step $steps's data position: $(position "$work/run2" $((steps + 1)))"

	say "chain: ckpt merge and sample.sbatch"
	bin/ckpt merge "$(printf "%s/run2/checkpoints/step-%06d" "$work" $((steps + 4)))" -o "$work/unet.safetensors"
	submit slurm/sample.sbatch --cpus-per-task=2 -- \
		--model "$data/model" --unet "$work/unet.safetensors" --prompt "a red circle" \
		--steps 4 --seed 1 -o "$work/sample.png"
	finish 120
	[ -s "$work/sample.png" ] || fail "sample.sbatch wrote no $work/sample.png"
	say "chain: ok: $work/sample.png"
}

case $parts in
script) test_script ;;
chain) test_chain ;;
all)
	test_script
	test_chain
	;;
esac
say "passed ($parts)"
