"""The conversions behind the ONNX precision variants: FP16, mixed (FP16 with sensitive ops kept FP32), BF16, INT8
and FP8 (static Q/DQ, calibrated on real audio), int4w and int8w (weight-only INT4 blockwise, INT8 per channel), plus
the graph inspection they need. The variants are built, verified and cached by core.pipeline (onnx_build)."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import ExportError, ManifestError
from .export import TWO_GB
from .pipeline.onnx_specs import ACT_MATMULS, FP8_CALIB_S, FP8_OP_TYPES, INPUT_PROJECTION, INT8_OP_TYPES, LM_HEAD

CALIB_MAX_SECONDS = 20.0  # the window length transcribe() feeds the model
_LN_CHAIN = {"Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul"}


# ---------------------------------------------------------------- graph inspection (shared with core.tensorrt)

def _name_nodes(model) -> None:
    """node_block_list matches by name: give unnamed nodes a stable one."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"


def _consumers(model) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _layernorm_pattern(model) -> list[str]:
    """Nodes of decomposed LayerNorms: from each ReduceMean whose input is also Sub-tracted from it,
    the chain of normalisation ops up to the Div (and its affine Mul/Add)."""
    consumers = _consumers(model)
    found: list[str] = []
    for node in model.graph.node:
        if node.op_type != "ReduceMean":
            continue
        x, mean = node.input[0], node.output[0]
        subs = [c for c in consumers.get(mean, []) if c.op_type == "Sub" and x in c.input]
        if not subs:
            continue
        chain, frontier, seen_div = [node.name], [subs[0]], False
        while frontier and len(chain) < 16:
            cur = frontier.pop()
            if cur.name in chain or cur.op_type not in _LN_CHAIN:
                continue
            if seen_div and cur.op_type not in ("Mul", "Add"):
                continue
            chain.append(cur.name)
            seen_div |= cur.op_type == "Div"
            if not seen_div or cur.op_type == "Div":
                frontier += consumers.get(cur.output[0], [])
        if seen_div:
            found += chain
    return found


def _lm_head(model) -> list[str]:
    """The final projection: walking back from the graph output through Add/Identity to the MatMul/Gemm."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names, tensor = [], model.graph.output[0].name
    while tensor in producer:
        node = producer[tensor]
        names.append(node.name)
        if node.op_type in ("MatMul", "Gemm"):
            return names
        if node.op_type not in ("Add", "Identity", "Reshape", "Cast"):
            break
        produced = [i for i in node.input if i in producer]  # skip weights (bias Identity/Constant nodes)
        tensor = next((i for i in produced if producer[i].op_type in ("MatMul", "Gemm")), None) or next(
            (i for i in produced if producer[i].op_type not in ("Constant", "Identity")
             or producer[i].input and producer[i].input[0] in producer), "")
    return []


def _weight_matmuls(model) -> tuple[list, list]:
    """(MatMuls with a constant operand, MatMuls of two activations), in graph order."""
    constants = {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                             for o in n.output}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    weighted = [n for n in matmuls if any(i in constants for i in n.input)]
    return weighted, [n for n in matmuls if n not in weighted]


def fp32_nodes(model, keep_ops) -> dict[str, list[str]]:
    """Names of the nodes each entry of `keep_ops` selects (op types, or the pseudo types lm_head, act_matmuls,
    input_projection)."""
    _name_nodes(model)
    picked: dict[str, list[str]] = {}
    for op in keep_ops:
        if op == LM_HEAD:
            picked[op] = _lm_head(model)
        elif op in (ACT_MATMULS, INPUT_PROJECTION):
            weighted, activations = _weight_matmuls(model)
            picked[op] = [n.name for n in (activations if op == ACT_MATMULS else weighted[:1])]
        else:
            picked[op] = [n.name for n in model.graph.node if n.op_type == op]
            if op == "LayerNormalization":
                picked[op] += _layernorm_pattern(model)
    return picked


def tensor_types(model) -> dict[str, int]:
    """Element type of every tensor of a model (after shape inference), by name."""
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {t.name: t.data_type for t in inferred.graph.initializer}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    return types


# ---------------------------------------------------------------- conversions

def _toposort(model) -> None:
    """The float16 converter appends its input Casts at the end; the ONNX spec wants producers first."""
    nodes = list(model.graph.node)
    ready = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    ordered, pending = [], nodes
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:  # a cycle or a dangling input: leave the order alone, the checker will say what
            return
        ordered += done
        ready.update(o for n in done for o in n.output)
        pending = rest
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def _save(model, path: Path) -> None:
    import onnx
    big = model.ByteSize() > TWO_GB
    onnx.save_model(model, str(path), save_as_external_data=big, location="model.onnx.data" if big else None)


def _to_fp16(src: Path, dst: Path, keep_ops, log) -> dict:
    """ONNX Runtime's float16 converter with FP32 I/O; `keep_ops` nodes stay FP32 (Casts around them)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    model = onnx.load(str(src))
    picked = fp32_nodes(model, keep_ops)
    blocked = sorted({n for names in picked.values() for n in names})
    log(f"converting to FP16 ({len(blocked)} nodes kept in FP32)" if keep_ops else "converting to FP16")
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST),
                                     node_block_list=blocked)
    kept = {op: len(names) for op, names in picked.items()}
    if keep_ops:  # verify the claim we record: every kept node computes on float32 tensors
        types = tensor_types(model)
        nodes = {n.name: n for n in model.graph.node}
        wrong = [name for name in blocked if name in nodes and any(
            types.get(t) == onnx.TensorProto.FLOAT16 for t in list(nodes[name].input) + list(nodes[name].output))]
        if wrong:
            raise ExportError(f"FP16 converter did not keep {len(wrong)} nodes in FP32 (e.g. {wrong[0]}).",
                              "Report this with your onnxruntime version.")
    _toposort(model)
    for op, n in kept.items():
        if n == 0:
            log(f"note: no {op} nodes in this graph")
    _save(model, dst)
    return {"kept_fp32": kept, "kept_fp32_nodes": blocked, "converter": "onnxruntime.transformers.float16",
            "keep_io_types": True}


def _remove_debris(before: set) -> None:
    """On failure, symbolic shape inference dumps its model (and external data) into the working directory."""
    for name in set(os.listdir(".")) - before:
        if name == "sym_shape_infer_temp.onnx" or name.endswith(".data") and len(name) == 41:
            Path(name).unlink(missing_ok=True)


class _ClipReader:
    """CalibrationDataReader: processor-normalised clips, one per batch (no padding to skew ranges)."""

    def __init__(self, loaded, clips, input_names):
        from .transcribe import features
        self.items = []
        for samples in clips:
            values, mask = features(loaded.processor, [samples], loaded.sample_rate)
            feed = {"input_values": values}
            if "attention_mask" in input_names:
                feed["attention_mask"] = mask
            self.items.append(feed)
        self.rewind()

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self.items)


def calibration_clips(loaded, manifest: Path, size: int, skip: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """`size` clips of the manifest after its first `skip` (onnx_specs: the clips the conformance cells are cut
    from, when calibrating on the shipped set)."""
    from .audio import load_audio
    from .wer import load_manifest
    items = load_manifest(manifest)[skip:skip + size]
    limit = int(CALIB_MAX_SECONDS * loaded.sample_rate)
    clips = [load_audio(p, loaded.sample_rate).samples[:limit] for p, _ in items]
    return clips, [p.name for p, _ in items]


def _to_qdq(src: Path, dst: Path, work: Path, loaded, calib_manifest: Path, calib_size: int, exclude, log,
            fp8: bool = False, calib_skip: int = 0) -> dict:
    """quant_pre_process, then static QDQ quantization calibrated on real audio: INT8 (symmetric S8S8, per-channel
    weights, MinMax: the form TensorRT accepts as an explicitly quantized network), or with fp8 FP8 E4M3 of the
    MatMuls, per tensor, calibrated by ONNX Runtime's only float calibrator (Distribution), whose histograms need
    every clip the same length: the clips are tiled or cut to FP8_CALIB_S."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    pre = work / "preprocessed.onnx"
    before = set(os.listdir("."))
    log("quant_pre_process (shape inference, graph optimisation) ...")
    try:
        quant_pre_process(str(src), str(pre), auto_merge=True)
    except Exception as err:  # symbolic shape inference gives up on some graphs: ONNX shape inference only
        log(f"symbolic shape inference failed ({err}); pre-processing without it")
        _remove_debris(before)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    kept = fp32_nodes(model, exclude)
    excluded = sorted({n for names in kept.values() for n in names})
    clips, names = calibration_clips(loaded, calib_manifest, calib_size, calib_skip)
    if not clips:
        raise ManifestError(f"{calib_manifest} has no clips to calibrate on.", "Give a manifest with audio.")
    if fp8:
        from .bench import tile_speech
        rng = np.random.default_rng(0)
        clips = [tile_speech(c, int(FP8_CALIB_S * loaded.sample_rate), rng) for c in clips]
    what = "FP8" if fp8 else "INT8"
    log(f"calibrating {what} on {len(clips)} clips ({sum(len(c) for c in clips) / loaded.sample_rate:.1f} s) ...")
    inputs = [i.name for i in model.graph.input]
    op_types = list(FP8_OP_TYPES if fp8 else INT8_OP_TYPES)
    kind = QuantType.QFLOAT8E4M3FN if fp8 else QuantType.QInt8
    quantize_static(str(pre), str(dst), _ClipReader(loaded, clips, inputs), quant_format=QuantFormat.QDQ,
                    per_channel=not fp8, activation_type=kind, weight_type=kind, op_types_to_quantize=op_types,
                    nodes_to_exclude=excluded, use_external_data_format=model.ByteSize() > TWO_GB,
                    calibrate_method=CalibrationMethod.Distribution if fp8 else CalibrationMethod.MinMax,
                    extra_options={} if fp8 else {"ActivationSymmetric": True, "WeightSymmetric": True})
    pre.unlink()
    ops = Counter(n.op_type for n in onnx.load(str(dst), load_external_data=False).graph.node)
    kind_name = "float8 e4m3fn, per tensor" if fp8 else "int8 symmetric"
    return {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ", "per_channel": not fp8,
            "activations": kind_name, "weights": kind_name, "calibration": "Distribution" if fp8 else "MinMax",
            "op_types_quantized": op_types, "excluded_nodes": excluded, "kept_fp32": kept,
            **({"calibration_clip_seconds": FP8_CALIB_S} if fp8 else {}),
            "calibration_clips": names, "q_nodes": ops["QuantizeLinear"], "dq_nodes": ops["DequantizeLinear"]}


def _to_int4w(src: Path, dst: Path, exclude, block: int, log) -> dict:
    """ONNX Runtime's weight-only quantizer (round-to-nearest, blockwise symmetric INT4) in its QDQ form: each
    MatMul weight becomes INT4 + scales behind a DequantizeLinear; needs no calibration data. (Its QDQ form is
    INT4 only: "MatMul only supports QOperator format for 8 bits quantization", onnxruntime 1.31.)"""
    import logging
    import onnx
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
    model = onnx.load(str(src))
    excluded = sorted({n for names in fp32_nodes(model, exclude).values() for n in names})
    log(f"quantizing MatMul weights to INT4 (blocks of {block}, symmetric; {len(excluded)} nodes excluded) ...")
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, quant_format=QuantFormat.QDQ, bits=4)
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=True, quant_format=QuantFormat.QDQ,
                                     nodes_to_exclude=excluded, algo_config=config)
    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level, quiet.level = quiet.level, logging.WARNING   # it logs every node it visits at INFO
    try:
        quantizer.process()
    finally:
        quiet.setLevel(level)
    out = quantizer.model.model
    _save(out, dst)
    ops = Counter(n.op_type for n in out.graph.node)
    if not ops["DequantizeLinear"]:
        raise ExportError("The INT4 weight-only quantizer quantized no MatMul weights.",
                          "Check the model's ONNX graph (it needs MatMul nodes with constant weights).")
    return {"quantizer": "onnxruntime MatMulNBitsQuantizer (RTN)", "format": "QDQ", "weights": f"int4 symmetric, "
            f"blocks of {block}", "activations": "fp32", "excluded_nodes": excluded,
            "quantized_matmuls": ops["DequantizeLinear"], "opset": [o.version for o in out.opset_import if not o.domain]}


def _to_int8w(src: Path, dst: Path, exclude, log) -> dict:
    """Weight-only INT8, a small graph edit written here: each MatMul's constant 2-D weight [in, out] becomes INT8
    per output channel (symmetric, round to nearest, zero points 0) behind a DequantizeLinear(axis=1); activations
    stay FP32. ONNX Runtime's MatMulNBitsQuantizer refuses its QDQ form for 8 bits ("MatMul only supports QOperator
    format for 8 bits quantization", onnxruntime 1.31), and its QOperator form is ONNX Runtime's own MatMulNBits op,
    not the standard Q/DQ that TensorRT-RTX parses."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    model = onnx.load(str(src))
    excluded = sorted({n for names in fp32_nodes(model, exclude).values() for n in names})
    inits = {t.name: t for t in model.graph.initializer}
    left_alone = {i for n in model.graph.node if n.name in excluded for i in n.input}   # a weight the head shares too
    weights = list(dict.fromkeys(
        n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.name not in excluded
        and n.input[1] in inits and n.input[1] not in left_alone and len(inits[n.input[1]].dims) == 2
        and inits[n.input[1]].data_type == TensorProto.FLOAT))
    if not weights:
        raise ExportError("The INT8 weight-only quantizer found no MatMul with a constant 2-D weight.",
                          "Check the model's ONNX graph (it needs MatMul nodes with constant weights).")
    log(f"quantizing {len(weights)} MatMul weights to INT8 (per output channel, symmetric; {len(excluded)} nodes "
        "excluded) ...")
    added, dequantize = [], []
    for name in weights:
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        amax = np.abs(w).max(axis=0)
        scale = np.where(amax > 0, amax / 127, 1).astype(np.float32)   # an all-zero column: any scale, q = 0
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        added += [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale"),
                  numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero_point")]
        dequantize.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
                                           [name], axis=1, name=f"{name}_dequantize"))
    chosen = set(weights)
    kept = [t for t in model.graph.initializer if t.name not in chosen]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + added)
    nodes = dequantize + list(model.graph.node)   # constants only in: first, before anything reads them
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _save(model, dst)
    matmuls = sum(n.op_type == "MatMul" and n.input[1] in chosen for n in model.graph.node)
    return {"quantizer": "core.variants._to_int8w (round to nearest)", "format": "QDQ",
            "weights": "int8 symmetric, per output channel", "activations": "fp32", "excluded_nodes": excluded,
            "quantized_weights": len(weights), "quantized_matmuls": matmuls}


def _to_bf16(src: Path, dst: Path, keep, log) -> dict:
    """The FP16 conversion (`keep` nodes, Conv among them, left FP32) re-typed to BFLOAT16: FP16 initializers, Cast
    targets, tensor attributes and value_info. Weights are rounded from the export's FP32 values (nearest even), not
    from their FP16 copies, whose range clamp and subnormals would round them twice."""
    import ml_dtypes
    import onnx
    from onnx import TensorProto, numpy_helper
    recipe = _to_fp16(src, dst, keep, log)
    model = onnx.load(str(dst))
    fp32 = {t.name: t for t in onnx.load(str(src)).graph.initializer if t.data_type == TensorProto.FLOAT}

    def bf16(t, original=None):
        values = numpy_helper.to_array(original if original is not None else t).astype(np.float32)
        t.CopyFrom(numpy_helper.from_array(values.astype(ml_dtypes.bfloat16), t.name))

    log("re-typing the FP16 tensors to BF16 ...")
    for t in model.graph.initializer:
        if t.data_type == TensorProto.FLOAT16:
            bf16(t, fp32.get(t.name))
    for node in model.graph.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.BFLOAT16
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                bf16(a.t)
    for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT16:
            vi.type.tensor_type.elem_type = TensorProto.BFLOAT16
    onnx.shape_inference.infer_shapes(model, strict_mode=True)   # every op takes the types it is given
    types = Counter(tensor_types(model).values())
    if types[TensorProto.FLOAT16]:
        raise ExportError(f"{types[TensorProto.FLOAT16]} tensors are still FP16 after re-typing to BF16.",
                          "Report this with your onnx and onnxruntime versions.")
    _save(model, dst)
    return {**recipe, "converter": f"{recipe['converter']}, re-typed to bfloat16",
            "weights": "bfloat16, rounded from FP32 (nearest even)", "bf16_tensors": types[TensorProto.BFLOAT16]}


def bf16_emulation(model):
    """A model ONNX Runtime's CPU EP runs in place of a BF16 one (it has Cast kernels for bfloat16, but no MatMul,
    Add, ...): FP32 compute, BF16 constants widened (exactly), and every BF16-typed tensor rounded to BF16 by a
    Cast(BFLOAT16) -> Cast(FLOAT) pair right where it is produced. That is BF16 storage with FP32 arithmetic, what
    BF16 GEMMs on GPUs do (FP32 accumulation). Changes `model` in place."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    types = tensor_types(model)

    def widen(t):
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))

    for t in model.graph.initializer:
        if t.data_type == TensorProto.BFLOAT16:
            widen(t)
    nodes = []
    for node in model.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.BFLOAT16:
                widen(a.t)
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.BFLOAT16:
                a.i = TensorProto.FLOAT
        nodes.append(node)
        for i, out in enumerate(node.output):
            if types.get(out) == TensorProto.BFLOAT16:
                node.output[i] = f"{out}__fp32"
                nodes += [helper.make_node("Cast", [f"{out}__fp32"], [f"{out}__bf16"], to=TensorProto.BFLOAT16,
                                           name=f"{out}__round"),
                          helper.make_node("Cast", [f"{out}__bf16"], [out], to=TensorProto.FLOAT, name=f"{out}__widen")]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]   # it lists BF16 types that are FP32 now
    return model


# ---------------------------------------------------------------- checks recorded with each variant

BF16_EMULATED = "ONNX Runtime CPU on a BF16 emulation (FP32 compute, each BF16 tensor rounded where produced)"


def _ort_devices(precision: str, loaded) -> list[str]:
    """Where to run a variant for its checks: the CPU EP (Q/DQ, small models), CUDA first for big FP16; BF16 on CUDA
    only (the CPU EP has no BF16 kernels: _open_variant falls back to the emulation)."""
    import onnxruntime as ort
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if precision == "bf16":
        return ["cuda"] if cuda else []
    big = sum(p.numel() for p in loaded.model.parameters()) > 50e6
    if precision not in ("int8", "int4w", "int8w", "fp8") and cuda and big:
        return ["cuda", "cpu"]
    return ["cpu"] + (["cuda"] if cuda else [])


def _open_bf16_emulation(path: Path, log):
    """ONNX Runtime CPU on bf16_emulation() of the BF16 model at `path`, written to a temporary folder beside the
    candidate's (never into an artifact) and removed once the session holds it."""
    import onnx
    from .backends.base import BackendSpec
    from .backends.ort_backend import OrtBackend
    from .pipeline.store import TMP_PREFIX
    log("ONNX Runtime's CPU EP has no BF16 kernels: checking the BF16 model through its FP32 emulation")
    # named like the store's temporary folders (ending in the pid), so a killed build's copy is cleaned up too
    work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}bf16emu", suffix=f"-{os.getpid()}", dir=path.parent.parent))
    try:
        _save(bf16_emulation(onnx.load(str(path))), work / "model.onnx")
        return OrtBackend(BackendSpec("ort", "bf16", "cpu"), work / "model.onnx").load()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _open_variant(path: Path, precision: str, loaded, log):
    """A loaded ONNX Runtime backend on the variant at `path`, and how it runs it (recorded as verified_by)."""
    from .backends.base import BackendSpec
    from .backends.ort_backend import PROVIDERS, OrtBackend
    errors = []
    for device in _ort_devices(precision, loaded):
        try:
            return OrtBackend(BackendSpec("ort", precision, device), path).load(), f"ONNX Runtime {PROVIDERS[device]}"
        except Exception as err:  # e.g. an op without an FP16 kernel on this EP
            errors.append(f"{device}: {err}")
            log(f"ONNX Runtime {device} cannot run the {precision} model: {err}")
    if precision == "bf16":
        return _open_bf16_emulation(path, log), BF16_EMULATED
    raise ExportError(f"No ONNX Runtime execution provider here runs the {precision} model: {'; '.join(errors)}",
                      "Build it on a machine with onnxruntime-gpu, or use another precision.")
