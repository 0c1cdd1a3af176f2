#!/usr/bin/env bash
# Issue 2's GPU table: the CLI benchmark for wav2vec2-large (random weights) on PyTorch FP32/FP16 and
# ONNX Runtime CUDA FP32, 1/5/10 s, batch 1 and 8. Run from the repo root on a GPU machine with
# onnxruntime-gpu installed; output is tee'd to $OUT when set.
set -euo pipefail
out=${OUT:-/tmp}
export PYTHONUNBUFFERED=1 WORKBENCH_ARTIFACTS=${WORKBENCH_ARTIFACTS:-/tmp/wb-artifacts}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$out/gpu_foundation.log"
python3 -m core export --model random:wav2vec2-large 2>&1 | tail -n 12 | tee -a "$out/gpu_foundation.log"
python3 -m core bench --model random:wav2vec2-large \
  --backend torch:fp32:cuda --backend torch:fp16:cuda --backend ort:fp32:cuda \
  --seconds 1 5 10 --batch 1 8 --warmup 10 --repeats 50 2>&1 | tee -a "$out/gpu_foundation.log"
cp "$WORKBENCH_ARTIFACTS/results.sqlite" "$out/results_foundation.sqlite" 2>/dev/null || true
