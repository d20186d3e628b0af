#!/usr/bin/env bash
# make bench: zerodiff's Go code beside PyTorch on the CPU, the same shapes
# and thread counts, measured in the same run, as a table with the ratio.
#
#   kernels     matmul and 3x3 conv at UNet shapes (GFLOP/s)
#   resnet      one SD-like ResnetBlock forward + backward (GFLOP/s)
#   unet        one SD1.5 UNet forward on 32x32 latents (GFLOP/s; 3.4 GB of memory)
#   demo        one optimizer step of the demo recipe, batch 64 (img/s)
#   prep        JPEG decode + resize + crop to 512 (img/s, one thread), vs PIL + torchvision
#   sample      bin/sample on the tiny test model, 20 steps (s), vs diffusers' pipeline
#
# The reference is the Python of $ZD_PYTHON or $PYTHON (make bench passes the
# `make venv` environment); without one the PyTorch column says n/a.
# BENCH_ONLY="kernels demo" runs a subset; BENCH_COUNT (default 3) runs of each
# Go benchmark, the median shown. Other jobs on the machine skew both sides:
# run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

python=""
for p in "${ZD_PYTHON:-}" "${PYTHON:-}"; do
	if [ -n "$p" ] && [ -x "$p" ]; then
		python="$p"
		break
	fi
done
only="${BENCH_ONLY:-kernels resnet unet demo prep sample}"
count="${BENCH_COUNT:-3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/go.tsv"
: >"$tmp/torch.tsv"
want() { [[ " $only " == *" $1 "* ]]; }
export HF_HUB_OFFLINE=1

# gobench PKG REGEX UNIT CPUS [ENV...]: median of UNIT per (benchmark, threads) into go.tsv.
gobench() {
	local pkg=$1 re=$2 unit=$3 cpus=$4
	shift 4
	echo "go: go test $pkg -bench '$re' -cpu $cpus -count $count" >&2
	env "$@" "${GO:-go}" test "$pkg" -run '^$' -bench "$re" -cpu "$cpus" -count "$count" -timeout 60m >"$tmp/out.txt"
	awk -v unit="$unit" '/^Benchmark/ {
		name = $1; sub(/^Benchmark/, "", name); threads = 1
		if (match(name, /-[0-9]+$/)) { threads = substr(name, RSTART + 1); name = substr(name, 1, RSTART - 1) }
		for (i = 2; i < NF; i++) if ($(i + 1) == unit) print tolower(name), threads, $i, unit
	}' "$tmp/out.txt" | sort -k1,1 -k2,2n -k3,3g | awk '
		function flush() { if (n) print key, v[int((n + 1) / 2)], u }
		{ k = $1 " " $2; if (k != key) { flush(); key = k; n = 0 } v[++n] = $3; u = $4 }
		END { flush() }' >>"$tmp/go.tsv"
}

# torchrow NAME THREADS JSONKEY CMD...: one value from a script's JSON line into torch.tsv.
torchrow() {
	local name=$1 threads=$2 key=$3
	shift 3
	[ -n "$python" ] || return 0
	echo "torch: $*" >&2
	"$@" | "$python" -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print('$name', $threads, d['$key'])" >>"$tmp/torch.tsv"
}

if want kernels; then
	gobench ./internal/cpu 'Matmul_|Conv3x3' GFLOP/s 1,2
	if [ -n "$python" ]; then
		echo "torch: testdata/bench/torch_ops.py --threads 1,2" >&2
		"$python" testdata/bench/torch_ops.py --threads 1,2 | "$python" -c '
import json, sys
for r in json.load(sys.stdin)["results"]:
    print(r["name"], r["threads"], "%.2f" % r["gflops"])' >>"$tmp/torch.tsv"
	fi
fi
if want resnet; then
	gobench ./internal/nn 'ResnetBlock' GFLOP/s 1,2
	for t in 1 2; do
		torchrow resnetblock $t gflops env OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=1 "$python" testdata/bench/torch_resnet.py $t
	done
fi
if want unet; then
	gobench ./internal/sd/sd15 'UNetForwardSD15_32' GFLOP/s 1,2
	for t in 1 2; do
		torchrow unetforwardsd15_32 $t gflops "$python" testdata/bench/torch_unet.py --threads $t
	done
fi
if want demo; then
	gobench ./internal/train 'DemoStep' img/s 1,2
	for t in 1 2; do
		torchrow demostep $t img_per_s env OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=1 "$python" testdata/bench/torch_demo_step.py $t
	done
fi
if want prep; then
	mkdir -p "$tmp/jpeg"
	gobench ./internal/data 'DecodeResize' img/s 1 ZD_BENCH_DIR="$tmp/jpeg"
	sed -i 's#^decoderesize/#decoderesize_#' "$tmp/go.tsv"
	if [ -n "$python" ]; then
		echo "torch: testdata/bench/pil_resize.py" >&2
		"$python" testdata/bench/pil_resize.py "$tmp/jpeg" | "$python" -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    print("decoderesize_" + d["size"], 1, d["img_per_s"])' >>"$tmp/torch.tsv"
	fi
fi
# wall SECONDS-VAR CMD...: the command's wall time in seconds (best of 3).
wall() {
	local best=""
	for _ in 1 2 3; do
		local t0 t1 s
		t0=$(date +%s.%N)
		"$@" >/dev/null 2>&1
		t1=$(date +%s.%N)
		s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
		if [ -z "$best" ] || awk -v a="$s" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$s; fi
	done
	echo "$best"
}
if want sample; then
	"${GO:-go}" build -o "$tmp/sample" ./sample
	for t in 1 2; do
		echo "go: bin/sample tiny model, 20 steps, $t thread(s)" >&2
		echo "sample_tiny_20steps $t $(wall "$tmp/sample" --model testdata/models/tiny --prompt "a red circle" --steps 20 \
			--sampler dpmpp_2m --threads $t -o "$tmp/x.png") s" >>"$tmp/go.tsv"
		if [ -n "$python" ]; then
			echo "torch: testdata/bench/torch_sample_tiny.py $t" >&2
			echo "sample_tiny_20steps $t $(wall env OMP_NUM_THREADS=$t "$python" testdata/bench/torch_sample_tiny.py $t "$tmp/y.png")" >>"$tmp/torch.tsv"
		fi
	done
fi

# Ratio as "times better for zerodiff": throughput Go/torch, time torch/Go.
awk 'FILENAME == ARGV[1] { torch[$1 " " $2] = $3; next }
	FNR == 1 { printf "%-28s %7s %12s %12s %-8s %10s\n", "benchmark", "threads", "zerodiff", "PyTorch", "unit", "ratio" }
	{
		k = $1 " " $2; t = (k in torch) ? torch[k] : ""
		if (t == "" || t == 0 || $3 == 0) { printf "%-28s %7d %12.2f %12s %-8s %10s\n", $1, $2, $3, "n/a", $4, "n/a"; next }
		r = ($4 == "s") ? t / $3 : $3 / t
		printf "%-28s %7d %12.2f %12.2f %-8s %10.2f\n", $1, $2, $3, t, $4, r
	}' "$tmp/torch.tsv" "$tmp/go.tsv"
echo "ratio: zerodiff relative to PyTorch, > 1 means zerodiff is faster (throughput ratio, or time ratio for s)"
