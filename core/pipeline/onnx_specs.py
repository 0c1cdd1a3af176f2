"""What the ONNX artifacts are (their keys), without building anything: backends look them up through these."""
from __future__ import annotations

from pathlib import Path

from ..envinfo import version
from ..paths import DEMO_TESTSET, SPEECH_CLIPS
from .store import Spec

OPSET = 17
VARIANTS = ("fp16", "mixed", "int8", "int4w", "fp8", "bf16", "int8w")
RECIPE = 1  # bump when the conversion code changes, so variants rebuild
LM_HEAD = "lm_head"  # pseudo op type: the final projection producing the logits
# Numerically sensitive ops kept in FP32 by the mixed variant. LayerNormalization also covers the
# decomposed pattern (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div) that older opsets export.
DEFAULT_KEEP_FP32 = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
                     "ReduceL2", "ReduceLogSumExp", LM_HEAD)
DEFAULT_CALIB_SIZE = 32
ACT_MATMULS = "act_matmuls"            # pseudo op type: MatMuls of two activations (attention's scores, context)
INPUT_PROJECTION = "input_projection"  # pseudo op type: the first MatMul with a weight (wav2vec2's feature projection)
# INT8 (W8A8) quantizes the MatMuls with weights but the input projection and the final one; convolutions,
# attention's activation products and those two stay FP32. Quantizing every MatMul, Conv and Gemm failed 7 of the
# gate's 9 conformance cells on the demo model, this recipe 1 (both calibrated away from the cells' clips;
# bench/NOTES.md, 2026-11-30).
INT8_OP_TYPES = ("MatMul",)
INT8_KEEP_FP32 = (LM_HEAD, ACT_MATMULS, INPUT_PROJECTION)
# int4w: weight-only INT4 of the MatMul weights, blockwise symmetric (DequantizeLinear with block_size, opset 21):
# the form TensorRT(-RTX) parses as weight-only quantization; activations stay FP32
# fp8: FP8 E4M3 Q/DQ around the MatMuls (activations and weights, per tensor), for GPUs with FP8 tensor cores
FP8_OP_TYPES = ("MatMul",)
FP8_CALIB_S = 4.0
INT4_BLOCK = 16   # blocks of 32 failed the conformance matrix on 0.7 s clips (demo model); bench/NOTES.md
# bf16: the FP16 conversion re-typed to BFLOAT16; Conv stays FP32 (the ONNX spec's Conv has no bfloat16 type)
BF16_KEEP_FP32 = ("Conv",)
# int8w: weight-only INT8 of the MatMul weights, per output channel, symmetric; activations stay FP32
WEIGHT_ONLY = ("int4w", "int8w")


def versions(*dists: str) -> dict:
    return {d: version(d) for d in dists}


class OnnxExport(Spec):
    """The FP32 ONNX export (dynamic batch and time axes)."""
    name, file = "onnx", "model.onnx"

    def __init__(self, loaded, opset: int = OPSET, exporter: str = "torchscript"):
        super().__init__(loaded, "fp32", None, {"opset": opset, "exporter": exporter})

    def toolchain(self) -> dict:
        return versions("torch", "transformers", "onnx")


class OnnxVariant(Spec):
    """FP16, mixed (FP16 with sensitive ops kept FP32), INT8 or FP8 (static Q/DQ, calibrated on real audio),
    int4w / int8w (weight-only INT4 blockwise / INT8 per channel) or BF16, derived from the FP32 export."""
    name, file = "onnx", "model.onnx"

    def __init__(self, loaded, precision: str, keep_fp32_ops=None, calib_size: int | None = None,
                 calib_manifest=None, parent: OnnxExport | None = None):
        from ..errors import ExportError
        from .fingerprint import file_sha256
        if precision not in VARIANTS:
            raise ExportError(f"Unknown precision variant '{precision}'.", f"Choose from {', '.join(VARIANTS)}; "
                              "FP32 is the export itself (python -m core build onnx).")
        if keep_fp32_ops is None:
            keep = (list(DEFAULT_KEEP_FP32) if precision == "mixed" else list(INT8_KEEP_FP32) if precision == "int8"
                    else [LM_HEAD] if precision in ("fp8", *WEIGHT_ONLY) else [])
        else:
            keep = list(dict.fromkeys(keep_fp32_ops))
            if precision == "fp16" and keep:
                raise ExportError("The fp16 variant keeps nothing in FP32.", "Use the mixed precision with --keep-fp32.")
        if precision == "bf16":   # not a choice: without it the graph is not valid ONNX
            keep = list(dict.fromkeys([*BF16_KEEP_FP32, *keep]))
        settings = {"recipe": RECIPE, "keep_fp32_ops": keep}
        if precision in ("int8", "fp8"):
            calib_size = DEFAULT_CALIB_SIZE if calib_size is None else int(calib_size)
            if calib_size < 1:
                raise ExportError(f"Calibration set size must be at least 1 (got {calib_size}).",
                                  "Use --calib-size 32.")
            calib = calib_manifest or DEMO_TESTSET
            # from the shipped set, calibration skips the clips the conformance cells are cut from: calibrating on
            # them flattered INT8 (demo model: 9 of 9 gate cells, 8 of 9 without them; bench/NOTES.md 2026-11-30)
            skips = SPEECH_CLIPS if Path(calib).resolve() == DEMO_TESTSET.resolve() else 0
            settings.update(calib_size=calib_size, calib_manifest=str(calib), calib_skips_first=skips,
                            op_types=list(FP8_OP_TYPES if precision == "fp8" else INT8_OP_TYPES),
                            calib_sha256=file_sha256(calib) if Path(calib).is_file() else None)
        if precision == "int4w":
            settings.update(block_size=INT4_BLOCK, symmetric=True, op_types=["MatMul"])
        if precision == "int8w":
            settings.update(per_channel=True, symmetric=True, op_types=["MatMul"])
        super().__init__(loaded, precision, parent or OnnxExport(loaded), settings)

    def toolchain(self) -> dict:
        return versions("onnx", "onnxruntime", "onnxruntime-gpu")


def onnx_spec(loaded, precision: str = "fp32") -> Spec:
    """The default-settings spec a backend of this precision runs."""
    return OnnxExport(loaded) if precision == "fp32" else OnnxVariant(loaded, precision)
