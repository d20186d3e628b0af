#!/usr/bin/env bash
# Runs every go test -fuzz target in the repository for FUZZTIME each, one at
# a time, and stops at the first failure, which Go saves under the package's
# testdata/fuzz/ for a test to replay.
#
# FUZZTIME is a go test -fuzztime value: a count (20000x, the default, which
# `make test` uses: about a minute for all targets here) or a duration
# (`FUZZTIME=10m scripts/fuzz.sh` for a long run). Counts are immune to a race
# in Go's fuzzing coordinator (golang/go#75804, fixed in Go 1.27): at the end
# of a duration it can fail a target with a bare "context deadline exceeded"
# although nothing was found. A duration run that ends so and writes no
# failing input is reported as that race, not as a failure.
# Usage: scripts/fuzz.sh [package-dir-regexp]
set -euo pipefail
cd "$(dirname "$0")/.."
time=${FUZZTIME:-20000x}
minimize=${FUZZMINIMIZE:-}
if [ -z "$minimize" ]; then
	case $time in *x) minimize=100x ;; *) minimize=5s ;; esac
fi
filter=${1:-.}
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
	dir=$(dirname "$f")
	[[ $dir =~ $filter ]] || continue
	for name in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
		start=$SECONDS
		corpus="$dir/testdata/fuzz/$name"
		before=$(find "$corpus" -type f 2>/dev/null | wc -l || true)
		if ! out=$(go test -run='^$' -fuzz="^$name\$" -fuzztime="$time" -fuzzminimizetime="$minimize" -parallel="${FUZZPARALLEL:-2}" "$dir" 2>&1); then
			after=$(find "$corpus" -type f 2>/dev/null | wc -l || true)
			if [ "$after" = "$before" ] && grep -q '^    context deadline exceeded$' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
				echo "fuzz: $dir $name ok ($time, $((SECONDS - start)) s; ended by Go's fuzztime race golang/go#75804, nothing found)"
				continue
			fi
			echo "$out"
			echo "fuzz: $dir $name FAILED" >&2
			exit 1
		fi
		echo "fuzz: $dir $name ok ($time, $((SECONDS - start)) s with the build)"
	done
done
