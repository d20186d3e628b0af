#!/usr/bin/env bash
# The GPU check, run on the GPU machine from the folder scripts/gpu-check-prep.sh
# filled (.gpu/): the smoke kernel, every CUDA-vs-CPU op test, the SD1.5 UNet
# training step (ours and diffusers', bf16, 64x64 latents, batch 8 and 32;
# then ours once more with the device time of every kernel and GEMM) and the
# UNet loop of sampling one 512x512 image with 30 DPM++ steps, the fused
# attention forward and backward (ZD_CUDA_ATTENTION=flash) and GroupNorm+SiLU
# against the unfused ones, and the batch-8 step once more with fused
# attention, each under `timeout`, then a table naming the card. Whole run:
# under 10 minutes.
# Full logs go to .gpu/out, and after every step into $OUT/gpu-check-logs.tgz
# with the table as $OUT/table.txt (where $OUT is set: the device tool brings
# back at most 8 files). Never touches clocks, power or MIG.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out"
rm -rf "$out"
mkdir -p "$out"
cd "$here"
# keep: pack the logs so far into $OUT, so a run cut short still brings them back.
keep() { [ -n "${OUT:-}" ] && tar -czf "$OUT/gpu-check-logs.tgz" -C "$out" . 2>/dev/null; return 0; }

# cuBLAS and NCCL are opened at run time: add PyTorch's wheel copies to the
# loader path in case the system has none on it.
sp="$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null || true)"
for d in $(find $sp -path '*nvidia*' \( -name 'libcublas.so.1[23]' -o -name 'libnccl.so.2' \) 2>/dev/null | xargs -r -n1 dirname | sort -u); do
	export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
python3 -m pip install -q --no-index --no-deps --target "$here/pylib" "$here"/wheels/*.whl >"$out/pip.log" 2>&1
export PYTHONPATH="$here/pylib:$here/bench"
card="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
short="$(echo "$card" | grep -oE 'H100|H200|A100|L40S|[A-Z][0-9]{2,3}' | head -1)"
short="${short:-GPU}"
echo "gpu-check on $card"
{ nvidia-smi; echo; echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"; ldconfig -p | grep -E 'libcuda|libcublas|libnccl|libnvidia-ml'; } >"$out/env.log" 2>&1

rows=()
row() { rows+=("$(printf '%-5s %-34s %-7s %-12s %-12s %s' "$short" "$1" "$2" "$3" "$4" "$5")"); }
# metric FILE UNIT: the value before UNIT on the last Go benchmark line of FILE.
metric() { grep -E '^Benchmark' "$1" | tail -1 | awk -v u="$2" '{for (i = 2; i <= NF; i++) if ($i == u) print $(i-1)}'; }
# kv FILE KEY: KEY=value from the last torch line of FILE.
kv() { grep -E '^torch ' "$1" | tail -1 | grep -oE "$2=[^ ]+" | cut -d= -f2; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", b / a; else print "-" }'; }
step() { # step NAME SECONDS LOG COMMAND...: run under timeout, say ok or FAIL.
	local name="$1" secs="$2" log="$3"
	shift 3
	local t0=$SECONDS rc=0
	timeout "$secs" "$@" >"$out/$log" 2>&1 || rc=$?
	keep
	if [ $rc = 0 ]; then
		echo "  $name: ok ($((SECONDS - t0)) s)"
		return 0
	fi
	echo "  $name: FAIL (exit $rc, $((SECONDS - t0)) s; see $log)"
	tail -5 "$out/$log" | sed 's/^/    /'
	return 1
}

if step "smoke kernel" 30 smoke.log ./cuda.test -test.run '^(TestSmoke|TestKernelsLoad)$' -test.v; then
	row "smoke kernel (load all PTX, launch)" ok - - -
else
	row "smoke kernel (load all PTX, launch)" FAIL - - -
fi

step "op tests" 80 ops.log ./cuda.test -test.run 'Test' -test.skip 'TestUNetSD15VsCPU' -test.v
pass=$(grep -c -- '^--- PASS' "$out/ops.log")
fail=$(grep -c -- '^--- FAIL' "$out/ops.log")
step "nvml" 20 nvml.log ./gpuinfo.test -test.run 'TestQuery' -test.v
row "CUDA-vs-CPU op tests" "$([ "$fail" = 0 ] && [ "$pass" -gt 0 ] && echo ok || echo FAIL)" "$pass passed" "$fail failed" -
step "sd1.5 unet vs cpu" 120 unet_vs_cpu.log ./cuda.test -test.run '^TestUNetSD15VsCPU$' -test.v
row "SD1.5 UNet fwd+bwd f32 vs CPU" "$(grep -q -- '^--- PASS: TestUNetSD15VsCPU' "$out/unet_vs_cpu.log" && echo ok || echo FAIL)" \
	"$(grep -oE 'weight gradients \(all\): [0-9]+ values, relative L2 error [^ ]+' "$out/unet_vs_cpu.log" | awk '{print "g " $NF}')" \
	"$(grep -oE 'output: [0-9]+ values, relative L2 error [^ ]+' "$out/unet_vs_cpu.log" | awk '{print "y " $NF}')" "rel L2"
row "NVML query" "$(grep -q -- '^--- PASS: TestQuery' "$out/nvml.log" && echo ok || echo FAIL)" - - -

for bs in 8 32; do
	ckpt=0
	[ "$bs" = 32 ] && ckpt=1 # fp32 activations of batch 32 need gradient checkpointing on 80 GB
	step "go train step bs$bs" $([ "$bs" = 8 ] && echo 70 || echo 85) "go_train_bs$bs.log" \
		env ZD_MATH=bf16 ZD_BATCH=$bs ZD_CKPT=$ckpt ./cuda.test -test.run '^$' -test.bench 'UNetTrainStep' -test.benchtime 3x
	step "torch train step bs$bs" $([ "$bs" = 8 ] && echo 45 || echo 60) "torch_train_bs$bs.log" \
		python3 bench/torch_unet_train.py --batch $bs --steps 5
	g="$out/go_train_bs$bs.log" p="$out/torch_train_bs$bs.log"
	ours=$(metric "$g" ms/step) ref=$(kv "$p" ms/step)
	res=$([ -n "$ours" ] && [ -n "$ref" ] && echo ok || echo FAIL)
	row "unet train step bs$bs 64x64 ms" "$res" "${ours:--} ms" "${ref:--} ms" "$(ratio "$ours" "$ref")"
	row "  img/s (ours, torch)" "" "$(metric "$g" img/s)" "$(kv "$p" img/s)" ""
	row "  MFU % of 790 TFLOP/s" "" "$(metric "$g" MFU%)" "$(kv "$p" MFU%)" ""
	row "  peak GiB$([ $ckpt = 1 ] && echo ' (ours checkpointed)')" "" "$(metric "$g" peakGiB)" "$(kv "$p" peakGiB)" ""
done

step "go train step bs8 profile" 60 go_profile_bs8.log \
	env ZD_MATH=bf16 ZD_BATCH=8 ZD_CUDA_PROFILE=1 ./cuda.test -test.run '^$' -test.bench 'UNetTrainStep' -test.benchtime 1x

step "go sample unet x30" 40 go_sample.log env ZD_MATH=bf16 ./cuda.test -test.run '^$' -test.bench 'UNetSample30' -test.benchtime 2x
step "torch sample 30 steps" 40 torch_sample.log python3 bench/torch_sample.py --steps 30 --repeat 2
ours=$(metric "$out/go_sample.log" ms/image) ref=$(kv "$out/torch_sample.log" unet30_ms)
row "sample 512px 30 DPM++ (UNet) ms" "$([ -n "$ours" ] && [ -n "$ref" ] && echo ok || echo FAIL)" "${ours:--} ms" "${ref:--} ms" "$(ratio "$ours" "$ref")"

step "attention fwd fused vs unfused" 60 attn_fwd.log ./cuda.test -test.run '^$' -test.bench 'AttentionForward' -test.benchtime 20x
step "attention bwd fused vs unfused" 60 attn_bwd.log ./cuda.test -test.run '^$' -test.bench 'AttentionBackward' -test.benchtime 10x
# attn DIR FLASH SHAPE: ms per call of one BenchmarkAttention{Forward,Backward} case.
attn() {
	grep -E "^BenchmarkAttention$1/flash=$2/$3(-[0-9]+)?[[:space:]]" "$out/attn_$([ "$1" = Forward ] && echo fwd || echo bwd).log" |
		awk '{for (i = 2; i <= NF; i++) if ($i == "ns/op") printf "%.3f", $(i-1) / 1e6}'
}
for dir in Forward Backward; do
	for shape in b2_tq4096_tk4096_h8_d40 b2_tq4096_tk77_h8_d40; do
		f=$(attn $dir true $shape) u=$(attn $dir false $shape)
		row "flash $([ $dir = Forward ] && echo fwd || echo bwd) ${shape#b2_} ms" "$([ -n "$f" ] && [ -n "$u" ] && echo ok || echo FAIL)" \
			"${f:--} ms" "${u:--} ms" "$(ratio "$f" "$u")"
	done
done

step "groupnorm+silu fused vs unfused" 40 gn_silu.log ./cuda.test -test.run '^$' -test.bench 'GroupNormSiLU' -test.benchtime 20x
# gn FUSED: ms per forward+backward of one BenchmarkGroupNormSiLU case.
gn() { grep -E "^BenchmarkGroupNormSiLU/fused=$1(-[0-9]+)?[[:space:]]" "$out/gn_silu.log" | awk '{for (i = 2; i <= NF; i++) if ($i == "ns/op") printf "%.3f", $(i-1) / 1e6}'; }
f=$(gn true) u=$(gn false)
row "groupnorm+silu fwd+bwd 8x320x64x64 ms" "$([ -n "$f" ] && [ -n "$u" ] && echo ok || echo FAIL)" "${f:--} ms" "${u:--} ms" "$(ratio "$f" "$u")"

step "go train step bs8 flash" 70 go_train_bs8_flash.log \
	env ZD_CUDA_ATTENTION=flash ZD_MATH=bf16 ZD_BATCH=8 ZD_CKPT=0 ./cuda.test -test.run '^$' -test.bench 'UNetTrainStep' -test.benchtime 3x
f="$out/go_train_bs8_flash.log" u="$out/go_train_bs8.log"
ours=$(metric "$f" ms/step) ref=$(metric "$u" ms/step)
row "unet step bs8 flash (ref: unfused) ms" "$([ -n "$ours" ] && [ -n "$ref" ] && echo ok || echo FAIL)" "${ours:--} ms" "${ref:--} ms" "$(ratio "$ours" "$ref")"
row "  peak GiB (flash, unfused)" "" "$(metric "$f" peakGiB)" "$(metric "$u" peakGiB)" ""

{
	echo
	echo "card: $card   (ratio = reference / ours: above 1 means ours is faster)"
	printf '%-5s %-34s %-7s %-12s %-12s %s\n' card op/test result ours reference ratio
	printf '%s\n' "${rows[@]}"
} | tee "$out/table.txt"
[ -n "${OUT:-}" ] && cp "$out/table.txt" "$OUT/"
keep
echo "gpu-check: $SECONDS s; logs in $out"
