#!/usr/bin/env bash
# Issue 17 part 5 on a 2-GPU machine (nvidia-h200-x2), one phase per device call (each under 10 minutes), from the
# repository root once the wheels are staged (`source /tmp/devwheels/env.sh`) and /tmp/tv exists
# (bench/device_numpy1_env.sh .whl/np/*.whl, then .whl/sp/*.whl). bench/results/2026-11-30/README.md has the staging.
#   pyb1    Triton Python backend, one instance process per GPU (no CUDA-context time-slicing)
#   pyb2    Triton Python backend, two instance processes per GPU (each now with a share of the CPU cores)
#   pyt2    PyTriton, two instances per GPU in one process (the 2026-11-30 baseline: 0.84x)
#   per2    one PyTriton server per GPU (CUDA_VISIBLE_DEVICES), two instances each, the clients spread over them
# Each prints the STAGES lines (host time per stage of each instance's batches) and the 2-GPU / 1-GPU ratio.
set -uo pipefail
phase=${1:?usage: gpu_issue17.sh pyb1|pyb2|pyt2|per2}
out=${OUT:-/tmp/out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 WORKBENCH_ARTIFACTS=${WORKBENCH_ARTIFACTS:-/tmp/wb}
nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,temperature.gpu --format=csv > "$out/nvidia-smi-$phase.csv"
case "$phase" in
  pyb1) flags=(--python-backend --instances 1) ;;
  pyb2) flags=(--python-backend --instances 2) ;;
  pyt2) flags=(--instances 2) ;;
  per2) flags=(--instances 2 --server-per-gpu) ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
OUT=$out timeout 560 /tmp/tv/bin/python bench/gpu_multi.py --level-seconds 20 "${flags[@]}" > "$out/multi_$phase.log" 2>&1
echo "$phase exit $?" | tee -a "$out/multi_$phase.log"
cp "$out/gpu_multi.json" "$out/multi_$phase.json" 2>/dev/null
grep -v '^\s*File\|^\s*\^' "$out/multi_$phase.log" | tail -20
