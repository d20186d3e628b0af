#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored, well under 64 MiB) for a GPU machine that has
# a driver, Python with PyTorch, but no Go, no diffusers and no network:
#   cuda.test, gpuinfo.test   the cuda-tagged test binaries (op tests, smoke
#                             test, UNet benchmarks; the PTX is embedded)
#   bin.tar.gz                train, sample, prep built with -tags cuda
#                             (--device cuda), and ckpt, stripped and packed
#                             (gpu-train-check.sh unpacks them)
#   kernels/*.ptx             the PTX, for reference
#   wheels/                   diffusers and the dependencies PyTorch images lack
#   bench/                    the PyTorch side (testdata/bench/torch_*.py)
#   gpu-check.sh              the script to run there: .gpu/gpu-check.sh
#   gpu-train-check.sh        the tools end to end on the demo set, GPU
#   demo.json                 against CPU: .gpu/gpu-train-check.sh
# It first runs scripts/cuda-build-check.sh (headers, link stub, PTX and
# kernel launchers, vet).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/cuda-build-check.sh

cache="${ZD_CUDA_CACHE:-$HOME/.cache/zerodiff/cuda}"
rm -rf .gpu
mkdir -p .gpu/kernels .gpu/wheels .gpu/bench .gpu/bin
export CGO_ENABLED=1
export CGO_CFLAGS="-I$cache/inc/nvidia/cuda_runtime/include -Wno-deprecated-declarations"
export CGO_LDFLAGS="-L$cache/stub"
go test -c -tags cuda -o .gpu/cuda.test ./internal/cuda
go test -c -tags cuda -o .gpu/gpuinfo.test ./internal/gpuinfo
go build -tags cuda -trimpath -ldflags='-s -w' -o .gpu/bin/ ./train ./sample ./prep ./ckpt
cp internal/cuda/kernels/*.ptx .gpu/kernels/
cp testdata/bench/torch_unet_train.py testdata/bench/torch_sample.py .gpu/bench/
cp scripts/gpu-check.sh scripts/gpu-train-check.sh .gpu/
cp configs/demo.json .gpu/
# The GPU image has torch, transformers, peft and accelerate (so numpy,
# requests, regex, safetensors, huggingface-hub, filelock); diffusers also
# needs importlib_metadata (and zipp).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	--platform manylinux2014_x86_64 -d .gpu/wheels \
	diffusers==0.42.1 importlib_metadata==10.2.0 zipp==4.1.2
# The four tools weigh ~38 MiB, about 40% of that packed with gzip.
tar -czf .gpu/bin.tar.gz -C .gpu bin
rm -rf .gpu/bin
# What travels to the GPU machine is the repository's files and .gpu together.
size=$(( ($(du -sb .gpu | cut -f1) + $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)) >> 20 ))
if [ "$size" -ge 64 ]; then
	echo "gpu-check-prep: .gpu and the repository come to $size MiB, over the 64 MiB a GPU check may carry" >&2
	exit 1
fi
echo "gpu-check-prep: .gpu ready ($size MiB with the repository); on the GPU machine run .gpu/gpu-check.sh and .gpu/gpu-train-check.sh"
