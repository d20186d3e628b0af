#!/usr/bin/env bash
# Runs every go test -fuzz target in the repository for FUZZTIME each
# (default 3s: the short run of `make test`; `FUZZTIME=10m scripts/fuzz.sh`
# for a long one), one at a time, and stops at the first failure, which Go
# saves under the package's testdata/fuzz/ for a test to replay.
# Usage: scripts/fuzz.sh [package-dir-regexp]
set -euo pipefail
cd "$(dirname "$0")/.."
time=${FUZZTIME:-3s}
filter=${1:-.}
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
	dir=$(dirname "$f")
	[[ $dir =~ $filter ]] || continue
	for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
		start=$SECONDS
		if ! out=$(go test -run='^$' -fuzz="^$name\$" -fuzztime="$time" -fuzzminimizetime="${FUZZMINIMIZE:-5s}" -parallel="${FUZZPARALLEL:-2}" "$dir" 2>&1); then
			echo "$out"
			echo "fuzz: $dir $name FAILED" >&2
			exit 1
		fi
		echo "fuzz: $dir $name ok ($time, $((SECONDS - start)) s with the build)"
	done
done
