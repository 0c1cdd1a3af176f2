#!/usr/bin/env bash
# Issue 13 on a GPU machine, one phase per device call (each under 10 minutes), from the repository root once
# the wheels are staged (`source /tmp/devwheels/env.sh`; Triton also needs /tmp/tv from device_numpy1_env.sh):
#   check-a   conformance matrix, wav2vec2-large: torch fp16, ONNX Runtime CUDA fp32/fp16, fast fp16
#   check-b   the same for fast fp32 and ONNX Runtime again (after TF32 was turned off), then the timing protocol's table (python -m core bench, both scopes)
#   triton    the Triton sweep on the fixed fast backend (max batch 16), and the matrix on the demo model
#   check-demo  the matrix on the demo model (trained: transcripts gated too)
# Outputs (logs, JSON, the results database) go to $OUT.
set -uo pipefail
phase=${1:?usage: gpu_protocol.sh check-a|check-b|triton}
out=${OUT:-/tmp/out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 WORKBENCH_ARTIFACTS=${WORKBENCH_ARTIFACTS:-/tmp/wb}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$out/nvidia-smi-$phase.csv"
python3 -c 'import onnxruntime as o, torch; print("onnxruntime", o.__version__, o.get_available_providers(), "torch", torch.__version__)' \
  > "$out/versions-$phase.txt" 2>&1
large=(--model random:wav2vec2-large)
case "$phase" in
  check-a)
    python3 -m core check "${large[@]}" --backend torch:fp16:cuda --backend ort:fp32:cuda --backend ort:fp16:cuda \
      --backend fast:fp16:cuda > "$out/check_a.log" 2> "$out/check_a.err"; echo "check-a exit $?" | tee -a "$out/check_a.log" ;;
  check-b)
    python3 -m core check "${large[@]}" --backend ort:fp32:cuda --backend ort:fp16:cuda --backend fast:fp32:cuda \
      > "$out/check_b.log" 2> "$out/check_b.err"
    echo "check-b exit $?" | tee -a "$out/check_b.log"
    python3 -m core bench "${large[@]}" --backend torch:fp32:cuda --backend torch:fp16:cuda --backend ort:fp32:cuda \
      --backend ort:fp16:cuda --backend fast:fp16:cuda --seconds 5 --batch 1 8 --warmup 10 --repeats 50 \
      > "$out/bench.log" 2> "$out/bench.err"; echo "bench exit $?" | tee -a "$out/bench.log" ;;
  triton)
    /tmp/tv/bin/python bench/gpu_triton.py --backend fast:fp16:cuda --max-batch 16 --preferred 8 16 --level-seconds 10 \
      --concurrency 1 2 4 8 16 32 > "$out/gpu_triton.log" 2>&1; echo "triton exit $?" | tee -a "$out/gpu_triton.log"
    python3 -m core check --model demo --backend fast:fp16:cuda --backend ort:fp16:cuda --backend torch:fp16:cuda \
      > "$out/check_demo.log" 2> "$out/check_demo.err"; echo "check-demo exit $?" | tee -a "$out/check_demo.log" ;;
  check-demo)
    python3 -m core check --model demo --backend fast:fp16:cuda --backend torch:fp16:cuda --backend ort:fp16:cuda \
      --backend ort:fp32:cuda > "$out/check_demo.log" 2> "$out/check_demo.err"; echo "check-demo exit $?" | tee -a "$out/check_demo.log" ;;
  *) echo "unknown phase $phase" >&2; exit 2 ;;
esac
cp "$WORKBENCH_ARTIFACTS/results.sqlite" "$out/results-$phase.sqlite" 2>/dev/null
tail -n 40 "$out"/*.log
