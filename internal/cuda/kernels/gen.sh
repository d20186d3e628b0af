#!/usr/bin/env bash
# Regenerates the embedded PTX from the .cu files beside this script, with
# clang alone (no NVIDIA toolchain): one .ptx per kernel family, for sm_80,
# which the driver JIT-compiles for any newer GPU (A100, H100, H200).
# -ffp-contract=off keeps multiplies and adds apart as the Go CPU backend
# does; -nocudainc/-nocudalib because common.cuh defines what the kernels use.
# Then internal/cuda/kernelgen writes the typed Go launchers of the kernels
# (one method per KERNEL, with its parameters) from the same .cu files.
# Usage: internal/cuda/kernels/gen.sh [PTX dir] [Go file]
# (defaults: beside the sources, and internal/cuda/kernels_gen.go).
set -euo pipefail
src="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$src}"
gofile="${2:-$src/../kernels_gen.go}"
clang="${CLANG:-clang-19}"
mkdir -p "$out"
for cu in "$src"/*.cu; do
	name="$(basename "$cu" .cu)"
	"$clang" -x cuda --cuda-device-only --cuda-gpu-arch=sm_80 -nocudainc -nocudalib \
		-O3 -ffp-contract=off -Wall -Werror -S -o "$out/$name.ptx" "$cu"
done
gofile="$(cd "$(dirname "$gofile")" && pwd)/$(basename "$gofile")"
(cd "$src/.." && go run ./kernelgen -dir kernels -o "$gofile")
