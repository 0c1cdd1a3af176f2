"""INT8 calibration choices against the gate's conformance cells (CPU, demo model): which ops are quantized and
how activation ranges are calibrated. Each run builds one Q/DQ model outside the pipeline and prints the cells.

    PYTHONPATH=. python bench/int8_calibration.py MinMax|Percentile|Entropy pc|pt MatMul[,Conv,Gemm] [SKIP,...]

SKIP: parts of node names left in FP32 besides lm_head (e.g. attention/MatMul: the two activation-by-activation
products of attention, scores and context).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from core.backends.base import BackendSpec
from core.backends.ort_backend import OrtBackend
from core.bench import tile_speech
from core.models import load_model
from core.paths import DEMO_TESTSET, SPEECH_CLIPS
from core.pipeline.onnx_build import build_onnx
from core.pipeline.verify import conformance, reference
from core.variants import _ClipReader, calibration_clips, fp32_nodes


def main(method: str, per_channel: str, ops: str, skip: str = "") -> None:
    loaded = load_model("demo")
    art = build_onnx(loaded, log=lambda *_: None)
    work = Path(tempfile.mkdtemp())
    pre = work / "pre.onnx"
    quant_pre_process(str(art.path), str(pre), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    excluded = sorted({n for names in fp32_nodes(model, ["lm_head"]).values() for n in names}
                      | {n.name for n in model.graph.node for part in filter(None, skip.split(",")) if part in n.name})
    clips, _ = calibration_clips(loaded, DEMO_TESTSET, 32, SPEECH_CLIPS)   # as the pipeline: not the cells' clips
    if method != "MinMax":   # the histogram calibrators need clips of one length
        rng = np.random.default_rng(0)
        clips = [tile_speech(c, 4 * loaded.sample_rate, rng) for c in clips]
    out = work / "int8.onnx"
    quantize_static(str(pre), str(out), _ClipReader(loaded, clips, ["input_values", "attention_mask"]),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel == "pc", activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=ops.split(","), nodes_to_exclude=excluded,
                    calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    with reference(loaded) as ref, OrtBackend(BackendSpec("ort", "int8", "cpu"), out) as candidate:
        print(method, per_channel, ops, skip or "-", f"({len(excluded)} nodes FP32)",
              conformance(loaded, ref, candidate, log=lambda *_: None))


if __name__ == "__main__":
    main(*sys.argv[1:5])
