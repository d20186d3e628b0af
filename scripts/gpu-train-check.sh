#!/usr/bin/env bash
# The end-to-end check of --device cuda, run on the GPU machine from the
# folder scripts/gpu-check-prep.sh filled (.gpu/, cuda-tagged tools in
# .gpu/bin, configs/demo.json as .gpu/demo.json; no Go, no network):
#   1. prep of the demo data set (generated, nothing to download) on the GPU
#      and on the CPU, and the two text encodings of the empty caption compared;
#   2. train, 30 steps of demo.json (ZeRO-2, EMA, one rank, a checkpoint at
#      step 15) on the CPU's shards: on the CPU (GOMAXPROCS 16), on the GPU
#      with f32 GEMMs twice (the second must repeat the first's losses bit for
#      bit), resumed on the GPU from the first's step-15 checkpoint (steps 16
#      to 30 must repeat it too), and on the GPU with bf16 GEMMs and
#      validation images (EMA weights swapped in) at steps 15 and 30; then
#      each GPU loss curve's largest relative difference from the CPU's, and
#      each run's img/s (median over steps 3 to 30);
#   3. sample of one image with --device cuda from the bf16 run's final
#      weights (EMA), and the same on the CPU, compared where PIL is installed.
# Each step runs under timeout, cut further so the whole check stays under
# 3 minutes. Logs and runs go to .gpu/train-out/, packed into
# $OUT/gpu-train-check-logs.tgz where $OUT is set, with the summary as
# $OUT/train-check.txt. GPU_DEVICE=cpu runs the GPU side on the CPU, to try
# the script where there is no GPU.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/train-out"
rm -rf "$out"
mkdir -p "$out"
cd "$here" || exit 1
gpu="${GPU_DEVICE:-cuda}"
# gpu-check-prep.sh packs the tools to fit the 64 MiB a GPU check carries.
[ -f bin.tar.gz ] && { tar -xzf bin.tar.gz || exit 1; }
deadline=175 # seconds from the start; every step's timeout is cut to fit

# keep: pack the logs so far into $OUT, so a run cut short still brings them back.
keep() {
	[ -n "${OUT:-}" ] && tar -czf "$OUT/gpu-train-check-logs.tgz" -C "$out" --exclude='*.safetensors' --exclude='shards' . 2>/dev/null
	return 0
}

# cuBLAS is opened at run time: add PyTorch's wheel copy to the loader path
# in case the system has none on it.
libs="$(python3 -c 'import glob, os, site
print(":".join(sorted({os.path.dirname(p) for s in site.getsitepackages()
                        for p in glob.glob(os.path.join(s, "nvidia", "*", "lib", "libcublas.so.1[23]"))})))' 2>/dev/null)"
[ -n "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{ nvidia-smi; echo; echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"; } >"$out/env.log" 2>&1

failed=0
step() { # step NAME SECONDS LOG COMMAND...: run under timeout, say ok or FAIL.
	local name="$1" secs="$2" log="$3"
	shift 3
	local left=$((deadline - SECONDS)) t0=$SECONDS rc=0
	if [ "$left" -le 0 ]; then
		echo "  $name: SKIPPED (out of time)"
		failed=$((failed + 1))
		return 1
	fi
	[ "$secs" -gt "$left" ] && secs=$left
	timeout "$secs" "$@" >"$out/$log" 2>&1 || rc=$?
	keep
	if [ $rc = 0 ]; then
		echo "  $name: ok ($((SECONDS - t0)) s)"
		return 0
	fi
	echo "  $name: FAIL (exit $rc, $((SECONDS - t0)) s; see $log)"
	tail -5 "$out/$log" | sed 's/^/    /'
	failed=$((failed + 1))
	return 1
}

echo "gpu-train-check on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), device $gpu"
step "prep $gpu" 45 prep_gpu.log bin/prep --dataset demo --demo-samples 2048 \
	--out "$out/data-gpu/shards" --model "$out/data-gpu/model" --device "$gpu"
step "prep cpu" 30 prep_cpu.log bin/prep --dataset demo --demo-samples 2048 \
	--out "$out/data-cpu/shards" --model "$out/data-cpu/model" --device cpu

data="$out/data-cpu"
train=(bin/train --config demo.json --max-train-steps 30 --log-interval 1 --save-interval 15
	--pretrained-model-name-or-path "$data/model" --unet-config "$data/model/unet/config.json"
	--dataset-dir "$data/shards")
step "train cpu" 60 train_cpu.log env GOMAXPROCS=16 "${train[@]}" --device cpu --output-dir "$out/run-cpu"
step "train $gpu f32" 40 train_gpu_f32.log "${train[@]}" --device "$gpu" --math f32 --output-dir "$out/run-gpu-f32"
step "train $gpu f32 again" 25 train_gpu_f32_again.log "${train[@]}" --device "$gpu" --math f32 --output-dir "$out/run-gpu-f32-again"
step "train $gpu f32 resumed" 25 train_gpu_f32_resumed.log "${train[@]}" --device "$gpu" --math f32 \
	--output-dir "$out/run-gpu-f32-resumed" --resume-from-checkpoint "$out/run-gpu-f32/checkpoints/step-000015"
step "train $gpu bf16" 30 train_gpu_bf16.log "${train[@]}" --device "$gpu" --math bf16 --output-dir "$out/run-gpu-bf16" \
	--validation-prompts "a red circle" --validation-steps 15 --validation-num-inference-steps 10

run="$out/run-gpu-bf16"
step "merge" 15 merge.log bin/ckpt merge "$run/checkpoints/step-000030" -o "$run/unet.safetensors"
sample=(bin/sample --model "$data/model" --unet "$run/unet.safetensors" --prompt "a red circle"
	--sampler ddim --steps 20 --guidance 4 --seed 7)
step "sample $gpu" 30 sample_gpu.log "${sample[@]}" --device "$gpu" -o "$out/sample-gpu.png"
step "sample cpu" 20 sample_cpu.log "${sample[@]}" --device cpu -o "$out/sample-cpu.png"

python3 - "$out" "$gpu" <<'EOF' 2>&1 | tee "$out/summary.txt"
import array, json, os, struct, sys

out, gpu = sys.argv[1], sys.argv[2]

def records(name):
    try:
        return [json.loads(l) for l in open(os.path.join(out, "run-" + name, "log.jsonl"))]
    except OSError:
        return None

def losses(name):
    recs = records(name)
    if recs is None:
        return None, None
    ips = sorted(r["img_per_s"] for r in recs if r["step"] >= 3)
    return [r["loss"] for r in recs], (ips[len(ips) // 2] if ips else 0)

def text_states(dev):
    path = os.path.join(out, "data-" + dev, "shards", "uncond.safetensors")
    try:
        b = open(path, "rb").read()
    except OSError:
        return None
    n = struct.unpack("<Q", b[:8])[0]
    info = json.loads(b[8:8 + n])["text_embedding"]
    lo, hi = info["data_offsets"]
    return array.array("f", b[8 + n + lo:8 + n + hi])

print()
a, b = text_states("gpu"), text_states("cpu")
if a is not None and b is not None and len(a) == len(b):
    d = max(abs(x - y) for x, y in zip(a, b))
    print(f"prep: empty-caption text states ({len(a)} values), max |{gpu} - cpu| = {d:.3g} (max |cpu| {max(abs(y) for y in b):.3g})")
else:
    print("prep: text states missing, not compared")

ref, ref_ips = losses("cpu")
print(f"{'train run':<18} {'steps':>5} {'img/s':>9} {'max rel diff of loss vs cpu':>28}")
for name in ["cpu", "gpu-f32", "gpu-f32-again", "gpu-bf16"]:
    l, ips = losses(name)
    if l is None:
        print(f"{name:<18} missing")
        continue
    diff = "-"
    if ref and name != "cpu":
        diff = f"{max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(l, ref)):.3g}"
    print(f"{name:<18} {len(l):>5} {ips:>9.1f} {diff:>28}")
f1, _ = losses("gpu-f32")
f2, _ = losses("gpu-f32-again")
if f1 and f2 and len(f1) == len(f2) == 30:
    print("gpu f32 run repeated: " + ("the same losses, bit for bit" if f1 == f2 else "DIFFERENT losses (not deterministic)"))
else:
    print("gpu f32 run repeated: not compared (a run did not finish its 30 steps)")
r1, r2 = records("gpu-f32"), records("gpu-f32-resumed")
if r1 and r2 and len(r1) == 30 and [r["step"] for r in r2] == list(range(16, 31)):
    same = [r["loss"] for r in r1[15:]] == [r["loss"] for r in r2]
    print("gpu f32 run resumed at step 15: " + ("the same losses, bit for bit" if same else "DIFFERENT losses (resume is not exact)"))
else:
    print("gpu f32 run resumed at step 15: not compared (a run did not finish)")
imgs = [s for s in ("000015", "000030") if os.path.exists(os.path.join(out, "run-gpu-bf16", "validation", "step-" + s, "00.png"))]
print(f"gpu bf16 run: validation images at steps {', '.join(imgs) or 'none'} (want 000015, 000030)")

try:
    import numpy as np
    from PIL import Image
    x = np.asarray(Image.open(os.path.join(out, "sample-gpu.png")), dtype=np.int16)
    y = np.asarray(Image.open(os.path.join(out, "sample-cpu.png")), dtype=np.int16)
    print(f"sample: {x.shape}, max |{gpu} - cpu| = {np.abs(x - y).max()} of 255, mean {np.abs(x - y).mean():.3f}")
except ImportError:
    print("sample: images not compared (no numpy or PIL)")
except OSError as e:
    print(f"sample: {e}")
EOF
[ -n "${OUT:-}" ] && cp "$out/summary.txt" "$OUT/train-check.txt"
keep
echo "gpu-train-check: $failed step(s) failed, $SECONDS s; logs in $out"
[ "$failed" = 0 ]
