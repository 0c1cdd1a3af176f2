#!/usr/bin/env bash
# after stage.sh: TensorRT-RTX's libraries from the EP plugin wheel (same 1.7.1 build), the shim package, then the script
set -x
site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
ep=$site/onnxruntime_ep_nv_tensorrt_rtx
mkdir -p /tmp/rtxlib && ln -sf $ep/libtensorrt_rtx.so.1.7.1 /tmp/rtxlib/libtensorrt_rtx.so.1 && ln -sf $ep/libtensorrt_onnxparser_rtx.so.1.7.1 /tmp/rtxlib/libtensorrt_onnxparser_rtx.so.1
export LD_LIBRARY_PATH=/tmp/rtxlib:${LD_LIBRARY_PATH:-} PYTHONPATH=$PWD/.devwheels/p03/shim
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv
python3 -c "import onnxruntime, torch; print('ort', onnxruntime.__version__, 'torch', torch.__version__)"
mkdir -p $OUT && WORKBENCH_ARTIFACTS=/tmp/wbart python3 bench/gpu_rtx_refusal.py .devwheels/p03/engine 2>&1 | tee $OUT/rtx_refusal.txt
