#!/usr/bin/env bash
# make demo: the whole chain on the built-in data set, on this machine's CPU,
# with nothing to download: prep → train from scratch → merge → sample the
# prompt combinations training never saw → prompt-adherence score.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DEMO_OUT:-demo-out}
steps=${DEMO_STEPS:-400}
start=$(date +%s)
rm -rf "$out"

echo "== prep: 4096 captioned 16x16 images of colored shapes (4 color-shape combinations held out)"
bin/prep --dataset demo --out "$out/shards" --model "$out/model" --demo-samples 4096

echo "== train: a 1.7M-parameter text-conditioned UNet from scratch, $steps steps of 64 images, 2 local ranks, ZeRO-2"
bin/launch --nproc 2 -- bin/train --config configs/demo.json --max-train-steps "$steps" --threads 1 \
	--pretrained-model-name-or-path "$out/model" --unet-config "$out/model/unet/config.json" \
	--dataset-dir "$out/shards" --output-dir "$out/run"

ckpt=$(ls -d "$out"/run/checkpoints/step-* | tail -n 1)
echo "== merge: $ckpt (EMA weights) → $out/unet.safetensors"
bin/ckpt merge "$ckpt" -o "$out/unet.safetensors"

echo "== sample: the held-out combinations, 32 images each, DDIM 20 steps, guidance 4"
bin/sample --model "$out/model" --unet "$out/unet.safetensors" --score demo \
	--batch 32 --sampler ddim --steps 20 --guidance 4 --seed 7 --grid -o "$out/samples"

echo "== done in $(( $(date +%s) - start )) s; TensorBoard logs in $out/run/tensorboard"
