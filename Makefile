# zerodiff — build, test, benchmark, parity and golden files.
# Quick start: `make demo`, `make test`.

GO      ?= go
BIN     := bin
TOOLS   := $(patsubst %/main.go,%,$(wildcard */main.go))
# The Python reference stack (torch, diffusers, transformers, peft) for
# `make golden` and the PyTorch side of `make bench`; `make venv` creates it.
VENV    ?= $(HOME)/.cache/zerodiff/venv
PYTHON  ?= $(VENV)/bin/python

.PHONY: all build build-cuda test test-slurm fuzz gpu-check vet fmt-check bench parity parity-sd15 parity-sdxl golden venv demo clean

all: build

build:
	@mkdir -p $(BIN)
	$(if $(TOOLS),$(GO) build -o $(BIN)/ $(addprefix ./,$(TOOLS)),@echo "no tools yet")

# The tools with the CUDA backend (--device cuda) into bin/cuda/, with the CGO settings of
# scripts/gpu-check-prep.sh: CUDA 12 headers and a libcuda link stub, which
# scripts/cuda-build-check.sh fetches and makes in ZD_CUDA_CACHE when they are missing (the real
# libcuda comes with the driver: these binaries start only where one is installed).
ZD_CUDA_CACHE ?= $(HOME)/.cache/zerodiff/cuda

build-cuda:
	@test -f $(ZD_CUDA_CACHE)/stub/libcuda.so || ZD_CUDA_CACHE=$(ZD_CUDA_CACHE) scripts/cuda-build-check.sh
	@mkdir -p $(BIN)/cuda
	CGO_ENABLED=1 CGO_CFLAGS="-I$(ZD_CUDA_CACHE)/inc/nvidia/cuda_runtime/include -Wno-deprecated-declarations" \
		CGO_LDFLAGS="-L$(ZD_CUDA_CACHE)/stub" $(GO) build -tags cuda -o $(BIN)/cuda/ $(addprefix ./,$(TOOLS))

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test: fmt-check vet build
	$(GO) test -count=1 ./...
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh
	@if [ "$$(id -u)" = 0 ] && { command -v sbatch >/dev/null || command -v apt-get >/dev/null; }; then \
		slurm/test.sh; else echo "make test: test-slurm not run: needs root and Slurm or apt-get"; fi

# Every go test -fuzz target for FUZZTIME each (make test: 20000 inputs each; `make fuzz FUZZTIME=10m` for a long run).
FUZZTIME ?= 20000x

fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# Slurm end to end: two slurmd on this machine, the sbatch scripts, 2 nodes × 2 ranks with ZeRO-2,
# requeue on USR1 and resume, resume on another world size. Needs root; installs Debian's Slurm.
test-slurm: build
	slurm/test.sh

# Every golden comparison as one table row (op, tensor, shape, errors, tolerance, result).
parity:
	@rm -f parity.jsonl
	@ZD_PARITY=$(CURDIR)/parity.jsonl $(GO) test -count=1 ./... > /dev/null || true
	@$(GO) run ./internal/golden/paritytable parity.jsonl

bench:
	@PYTHON=$(PYTHON) scripts/bench.sh

# SD1.5 at full size: testdata/sd15/make_sd15.py writes the real architecture with seeded random
# weights to $(SD15_DIR) (~4 GB, never committed; needs the Python stack and 10 GB free; skipped when
# already there), then internal/sd/sd15 compares one UNet forward (64x64 and 32x32 latents), one VAE
# encode and decode (256 px) and the text encoder against diffusers/transformers, and prints the rows.
# About 5 minutes and 10 GB of RAM on 2 cores.
SD15_DIR ?= /tmp/zerodiff-sd15

parity-sd15: SHELL := /bin/bash
parity-sd15:
	@test -x $(PYTHON) || { echo "no Python reference stack at $(PYTHON): run 'make venv' first"; exit 1; }
	HF_HUB_OFFLINE=1 ZD_SD15_DIR=$(SD15_DIR) $(PYTHON) testdata/sd15/make_sd15.py
	@rm -f parity-sd15.jsonl
	@set -o pipefail; rc=0; \
	ZD_SD15_DIR=$(SD15_DIR) ZD_PARITY=$(CURDIR)/parity-sd15.jsonl \
		$(GO) test -count=1 -v -timeout 60m ./internal/sd/sd15 2>&1 | tee parity-sd15.log || rc=$$?; \
	$(GO) run ./internal/golden/paritytable parity-sd15.jsonl || rc=1; \
	exit $$rc

# SDXL base 1.0 at full size: testdata/sdxl/make_sdxl.py writes the real architecture with seeded random
# weights in float16 to $(SDXL_DIR) (6.5 GB, never committed; needs 12 GB free disk; skipped when already
# there) and diffusers' outputs, one component at a time, then exits; then internal/sd/sdxlfull compares one
# UNet forward with added conditioning (48x32 latents), both text encoders, encode_prompt and a VAE decode
# (256x192) and prints the rows. Python and Go never run at once: the UNet alone is 10.3 GB in float32, and
# each side's peak RSS is 10-17 GB (Go's counts the 4.8 GB UNet file it maps). About 4 minutes on 2 cores.
SDXL_DIR ?= /tmp/zerodiff-sdxl

parity-sdxl: SHELL := /bin/bash
parity-sdxl:
	@test -x $(PYTHON) || { echo "no Python reference stack at $(PYTHON): run 'make venv' first"; exit 1; }
	HF_HUB_OFFLINE=1 ZD_SDXL_DIR=$(SDXL_DIR) $(PYTHON) testdata/sdxl/make_sdxl.py
	@rm -f parity-sdxl.jsonl
	@set -o pipefail; rc=0; \
	ZD_SDXL_DIR=$(SDXL_DIR) ZD_PARITY=$(CURDIR)/parity-sdxl.jsonl \
		$(GO) test -count=1 -v -timeout 60m ./internal/sd/sdxlfull 2>&1 | tee parity-sdxl.log || rc=$$?; \
	$(GO) run ./internal/golden/paritytable parity-sdxl.jsonl || rc=1; \
	exit $$rc

# Regenerates testdata/golden with the Python reference stack (needs PyPI; never run by CI).
golden:
	@test -x $(PYTHON) || { echo "no Python reference stack at $(PYTHON): run 'make venv' first"; exit 1; }
	HF_HUB_OFFLINE=1 $(PYTHON) testdata/gen/main.py

venv:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r testdata/gen/requirements.txt

# Prepares .gpu/ (cuda-tagged test binaries, PTX, wheels, one script) for a GPU machine without Go
# or network: run .gpu/gpu-check.sh there. Needs clang-19 and PyPI here.
gpu-check:
	scripts/gpu-check-prep.sh

# The whole chain on the built-in data set: prep → train → merge → sample → score.
demo: build
	@scripts/demo.sh

clean:
	rm -rf $(BIN) parity.jsonl parity-sd15.jsonl parity-sd15.log parity-sdxl.jsonl parity-sdxl.log
