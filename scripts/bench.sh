#!/usr/bin/env bash
# bench.sh: time the GEMM-bound CPU kernels in Go (GOMAXPROCS 1 and 2) and,
# when a PyTorch environment is available, the same ops in PyTorch, and print
# a table of GFLOP/s side by side.
#
# Environment: the interpreter with torch is the first executable of
# $ZD_PYTHON or $PYTHON (set by `make bench`: the `make venv` environment);
# BENCH_COUNT (default 3) runs of each Go benchmark, whose median is shown;
# BENCH_TIME (default 1s) is go test's -benchtime. Other jobs on the machine
# skew both sides: run it on an idle one.
set -euo pipefail
cd "$(dirname "$0")/.."

python=""
for p in "${ZD_PYTHON:-}" "${PYTHON:-}"; do
	if [ -n "$p" ] && [ -x "$p" ]; then
		python="$p"
		break
	fi
done
count="${BENCH_COUNT:-3}"
benchtime="${BENCH_TIME:-1s}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "go: go test ./internal/cpu -bench 'Matmul_|Conv3x3' -cpu 1,2 -count $count -benchtime $benchtime" >&2
"${GO:-go}" test ./internal/cpu -run '^$' -bench 'Matmul_|Conv3x3' -cpu 1,2 -count "$count" -benchtime "$benchtime" >"$tmp/go.txt"

# "name threads gflops" per Go run; -cpu 1 runs carry no -N suffix.
awk '/^Benchmark/ {
	name = $1; sub(/^Benchmark/, "", name); threads = 1
	if (match(name, /-[0-9]+$/)) { threads = substr(name, RSTART + 1); name = substr(name, 1, RSTART - 1) }
	for (i = 2; i < NF; i++) if ($(i + 1) == "GFLOP/s") print tolower(name), threads, $i
}' "$tmp/go.txt" >"$tmp/go.tsv"

# Median over the runs of each (name, threads).
sort -k1,1 -k2,2n -k3,3g "$tmp/go.tsv" | awk '
	function flush() { if (n) print key, v[int((n + 1) / 2)] }
	{ k = $1 " " $2; if (k != key) { flush(); key = k; n = 0 } v[++n] = $3 }
	END { flush() }' >"$tmp/go_median.tsv"

: >"$tmp/torch.tsv"
if [ -n "$python" ]; then
	# Thread variables are set per thread count inside torch_ops.py;
	# OPENBLAS_NUM_THREADS matters for torch builds on OpenBLAS (REFERENCE.md §9).
	echo "torch: $python testdata/bench/torch_ops.py --threads 1,2" >&2
	"$python" testdata/bench/torch_ops.py --threads 1,2 >"$tmp/torch.json"
	"$python" - "$tmp/torch.json" >"$tmp/torch.tsv" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("# torch", d["torch"], file=sys.stderr)
for r in d["results"]:
    print(r["name"], r["threads"], "%.2f" % r["gflops"])
PY
else
	echo "torch: reference unavailable (no interpreter in ZD_PYTHON or PYTHON; run make venv)" >&2
fi

awk 'FILENAME == ARGV[1] { torch[$1 " " $2] = $3; next }
	FNR == 1 { printf "%-28s %7s %10s %12s %8s\n", "shape", "threads", "Go GFLOP/s", "torch GFLOP/s", "Go/torch" }
	{
		t = ($1 " " $2) in torch ? torch[$1 " " $2] : ""
		if (t != "") printf "%-28s %7d %10.1f %12.1f %8.2f\n", $1, $2, $3, t, $3 / t
		else printf "%-28s %7d %10.1f %12s %8s\n", $1, $2, $3, "n/a", "n/a"
	}' "$tmp/torch.tsv" "$tmp/go_median.tsv"
