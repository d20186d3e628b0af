#!/usr/bin/env bash
# Compiles the cuda-tagged build on a machine without a GPU or CUDA install:
#  1. CUDA 12 headers from PyPI wheels (cuda.h from nvidia-cuda-runtime-cu12;
#     the crt/ headers cuBLAS needs from nvidia-cuda-nvcc-cu12; cuBLAS and
#     NCCL headers from their wheels), unpacked into a cache outside the repo
#     by scripts/wheel-headers.py, which reads only the headers' bytes of the
#     wheels (about 1 MB, not their 760 MB);
#  2. a libcuda.so link stub: an empty function for every driver entry point
#     cuda.h declares (gorgonia.org/cu links -lcuda; the real library comes
#     with the driver on a GPU machine);
#  3. internal/cuda/dlcheck/check.c against the real cuBLAS and NCCL headers:
#     the values internal/cuda/dl.h declares by hand must be theirs;
#  4. the PTX regenerated with clang into a temporary folder and compared with
#     the committed internal/cuda/kernels/*.ptx, and the typed kernel launchers
#     regenerated from the .cu files and compared with the committed
#     internal/cuda/kernels_gen.go;
#  5. go build of the whole tree, go vet of the cuda-tagged packages and
#     go test -c of their tests, all with -tags cuda.
# With PTXAS set to NVIDIA's ptxas (nvidia/cuda_nvcc/bin/ptxas in the wheel
# `pip download --no-deps nvidia-cuda-nvcc-cu12==12.9.86` fetches, 40 MB),
# every PTX file is also assembled for sm_80 and sm_90: an error or a
# register spill fails the check. Without it that step is skipped.
# Needs clang-19 (or $CLANG), gcc, python3 and Go; .ci/run installs the first two.
# Usage: scripts/cuda-build-check.sh   (ZD_CUDA_CACHE overrides the cache folder)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=0
for tool in "${CLANG:-clang-19}" gcc python3 go; do
	command -v "$tool" >/dev/null 2>&1 && continue
	case $tool in
	go) how="Go 1.26 from https://go.dev/dl" ;;
	"${CLANG:-clang-19}") how="apt-get install clang-19, or CLANG=another clang with the NVPTX target" ;;
	*) how="apt-get install $tool" ;;
	esac
	echo "cuda-build-check: $tool is not installed ($how)" >&2
	missing=1
done
[ "$missing" = 0 ] || exit 1

cache="${ZD_CUDA_CACHE:-$HOME/.cache/zerodiff/cuda}"
wheels=(
	nvidia-cuda-runtime-cu12==12.9.79
	nvidia-cuda-nvcc-cu12==12.9.86
	nvidia-cublas-cu12==12.6.4.1
	nvidia-nccl-cu12==2.27.7
)
echo "cuda-build-check: CUDA 12 headers in $cache/inc"
python3 scripts/wheel-headers.py "$cache/inc" "${wheels[@]}"
nv="$cache/inc/nvidia"
# cuda_fp16.h includes <nv/target> (from CCCL, not needed by C code): an empty shim.
mkdir -p "$cache/shim/nv"
: >"$cache/shim/nv/target"
incs=(-I"$cache/shim" -I"$nv/cuda_runtime/include" -I"$nv/cuda_nvcc/include" -I"$nv/cublas/include" -I"$nv/nccl/include")

echo "cuda-build-check: libcuda.so link stub"
stub="$cache/stub"
mkdir -p "$stub"
{
	echo '/* libcuda.so.1 link stub: every driver entry point cuda.h declares, empty. */'
	gcc -E -P "$nv/cuda_runtime/include/cuda.h" | tr '\n' ' ' |
		grep -oE 'CUresult +[A-Za-z_][A-Za-z_0-9]* *\(' | sed -E 's/CUresult +//; s/ *\(//' |
		sort -u | sed 's/.*/void &(void) {}/'
} >"$stub/cuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so" "$stub/cuda_stub.c"

echo "cuda-build-check: dl.h against the cuBLAS and NCCL headers"
# -D__CUDA_FP8_H__ skips cuda_fp8.h, which nccl.h includes and which needs CCCL.
gcc -fsyntax-only -Wall -Werror -D__CUDA_FP8_H__ "${incs[@]}" internal/cuda/dlcheck/check.c

echo "cuda-build-check: PTX and kernel launchers"
ptx="$(mktemp -d)"
trap 'rm -rf "$ptx"' EXIT
internal/cuda/kernels/gen.sh "$ptx" "$ptx/kernels_gen.go"
if ! cmp -s internal/cuda/kernels_gen.go "$ptx/kernels_gen.go"; then
	echo "cuda-build-check: internal/cuda/kernels_gen.go differs from what kernels/gen.sh makes: run it and commit the Go file" >&2
	exit 1
fi
for f in internal/cuda/kernels/*.ptx "$ptx"/*.ptx; do
	name="$(basename "$f")"
	if ! cmp -s "internal/cuda/kernels/$name" "$ptx/$name"; then
		echo "cuda-build-check: internal/cuda/kernels/$name differs from what kernels/gen.sh makes: run it and commit the PTX" >&2
		exit 1
	fi
done

if [ -n "${PTXAS:-}" ]; then
	echo "cuda-build-check: ptxas for sm_80 and sm_90"
	for f in internal/cuda/kernels/*.ptx; do
		for arch in sm_80 sm_90; do
			if ! log="$("$PTXAS" -arch="$arch" -v -O3 -o /dev/null "$f" 2>&1)"; then
				printf 'cuda-build-check: ptxas -arch=%s rejects %s:\n%s\n' "$arch" "$f" "$log" >&2
				exit 1
			fi
			if grep 'bytes spill' <<<"$log" | grep -qv ' 0 bytes spill stores, 0 bytes spill loads'; then
				printf 'cuda-build-check: %s spills registers on %s:\n%s\n' "$f" "$arch" "$log" >&2
				exit 1
			fi
		done
	done
else
	echo "cuda-build-check: ptxas skipped (set PTXAS to check registers and spills)"
fi

echo "cuda-build-check: go build, vet and test -c with -tags cuda"
export CGO_ENABLED=1
# go-nvml's bundled nvml.h marks many functions deprecated; cgo would warn on each.
export CGO_CFLAGS="-I$nv/cuda_runtime/include -Wno-deprecated-declarations"
export CGO_LDFLAGS="-L$stub"
go build -tags cuda ./...
go vet -tags cuda ./internal/cuda/... ./internal/gpuinfo/...
out="$(mktemp -d)"
trap 'rm -rf "$ptx" "$out"' EXIT
go test -c -tags cuda -o "$out/cuda.test" ./internal/cuda
go test -c -tags cuda -o "$out/gpuinfo.test" ./internal/gpuinfo
echo "cuda-build-check: ok"
