"""ONNX precision variants derived from the FP32 export: FP16, mixed (FP16 with sensitive ops kept FP32) and
INT8 (static Q/DQ, calibrated on real audio). Each records its parity against FP32 and its WER/CER.

Layout: artifacts/<key>/onnx/<variant>/{model.onnx, meta.json}, built in a temp folder and renamed into
place. Cached by the FP32 source's sha256 plus a hash of the settings; a changed source rebuilds.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import ExportError, ManifestError
from .export import OnnxArtifact, TWO_GB, compare, export_onnx, file_sha256, onnx_dir, parity_audio, read_meta
from .paths import DEMO_TESTSET, write_json_atomic

VARIANTS = ("fp16", "mixed", "int8")
RECIPE = 1  # bump when the conversion code changes, so cached variants rebuild
LM_HEAD = "lm_head"  # pseudo op type: the final projection producing the logits
# Numerically sensitive ops kept in FP32 by the mixed variant. LayerNormalization also covers the
# decomposed pattern (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div) that older opsets export.
DEFAULT_KEEP_FP32 = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
                     "ReduceL2", "ReduceLogSumExp", LM_HEAD)
DEFAULT_CALIB_SIZE = 32
INT8_OP_TYPES = ("MatMul", "Conv", "Gemm")  # weight-bearing ops; element-wise ops gain nothing from INT8
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


def fp32_nodes(model, keep_ops) -> dict[str, list[str]]:
    """Names of the nodes each entry of `keep_ops` selects (op types, or 'lm_head')."""
    _name_nodes(model)
    picked: dict[str, list[str]] = {}
    for op in keep_ops:
        if op == LM_HEAD:
            picked[op] = _lm_head(model)
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


def calibration_clips(loaded, manifest: Path, size: int) -> tuple[list[np.ndarray], list[str]]:
    from .audio import load_audio
    from .wer import load_manifest
    items = load_manifest(manifest)[:size]
    limit = int(CALIB_MAX_SECONDS * loaded.sample_rate)
    clips = [load_audio(p, loaded.sample_rate).samples[:limit] for p, _ in items]
    return clips, [p.name for p, _ in items]


def _to_int8(src: Path, dst: Path, work: Path, loaded, calib_manifest: Path, calib_size: int, exclude, log) -> dict:
    """quant_pre_process, then static QDQ quantization (symmetric S8S8, per-channel weights: the form
    TensorRT accepts as an explicitly quantized network) calibrated with MinMax on real audio."""
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
    excluded = sorted({n for names in fp32_nodes(model, exclude).values() for n in names})
    clips, names = calibration_clips(loaded, calib_manifest, calib_size)
    if not clips:
        raise ManifestError(f"{calib_manifest} has no clips to calibrate on.", "Give a manifest with audio.")
    log(f"calibrating INT8 on {len(clips)} clips ({sum(len(c) for c in clips) / loaded.sample_rate:.1f} s) ...")
    inputs = [i.name for i in model.graph.input]
    quantize_static(str(pre), str(dst), _ClipReader(loaded, clips, inputs), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(INT8_OP_TYPES), nodes_to_exclude=excluded,
                    calibrate_method=CalibrationMethod.MinMax, use_external_data_format=model.ByteSize() > TWO_GB,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    pre.unlink()
    ops = Counter(n.op_type for n in onnx.load(str(dst), load_external_data=False).graph.node)
    return {"quantizer": "onnxruntime.quantization.quantize_static", "format": "QDQ", "per_channel": True,
            "activations": "int8 symmetric", "weights": "int8 symmetric", "calibration": "MinMax",
            "op_types_quantized": list(INT8_OP_TYPES), "excluded_nodes": excluded,
            "calibration_clips": names, "q_nodes": ops["QuantizeLinear"], "dq_nodes": ops["DequantizeLinear"]}


# ---------------------------------------------------------------- checks recorded with each variant

def _ort_devices(precision: str, loaded) -> list[str]:
    """Where to run a variant for its checks: the CPU EP (INT8 Q/DQ, small models), CUDA first for big FP16."""
    import onnxruntime as ort
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    big = sum(p.numel() for p in loaded.model.parameters()) > 50e6
    if precision != "int8" and cuda and big:
        return ["cuda", "cpu"]
    return ["cpu"] + (["cuda"] if cuda else [])


def _open_variant(path: Path, precision: str, loaded, log):
    from .backends import BackendSpec
    from .backends.ort_backend import OrtBackend
    errors = []
    for device in _ort_devices(precision, loaded):
        try:
            return OrtBackend(BackendSpec("ort", precision, device), path).load()
        except Exception as err:  # e.g. an op without an FP16 kernel on this EP
            errors.append(f"{device}: {err}")
            log(f"ONNX Runtime {device} cannot run the {precision} model: {err}")
    raise ExportError(f"No ONNX Runtime execution provider here runs the {precision} model: {'; '.join(errors)}",
                      "Build it on a machine with onnxruntime-gpu, or use another precision.")


_FP32_WER: dict[tuple, dict] = {}  # (fp32 sha, manifest sha) -> scores, so the reference is scored once


def _wer(backend, loaded, manifest: Path) -> dict:
    from .wer import evaluate
    r = evaluate(backend, loaded, manifest)
    return {"wer": r["wer"], "cer": r["cer"], "n": r["n"]}


def _checks(loaded, fp32: OnnxArtifact, path: Path, precision: str, manifest: Path | None, log) -> dict:
    from .backends import BackendSpec
    from .backends.ort_backend import OrtBackend
    out: dict = {}
    with OrtBackend(BackendSpec("ort", "fp32", "cpu"), fp32.path) as ref:
        cand = _open_variant(path, precision, loaded, log)
        try:
            log(f"parity of {precision} against FP32 on {cand.device} ...")
            out["parity"] = compare(loaded, ref, cand, parity_audio(loaded))
            out["parity"].update(reference="ort:fp32:cpu", candidate=cand.name)
            log(f"max |Δlogit| {out['parity']['max_abs_logit_diff']:.3g}, transcripts agree "
                f"{out['parity']['transcripts_agree']}/{out['parity']['transcripts_total']}")
            if manifest is None:
                out["wer"] = None
                out["wer_note"] = "no labelled manifest (data/demo_testset missing and none given): WER not measured"
                log(out["wer_note"])
                return out
            log(f"WER/CER on {manifest} ...")
            out["wer"] = _wer(cand, loaded, manifest)
            key = (fp32.meta.get("sha256"), file_sha256(manifest))
            if key not in _FP32_WER:
                _FP32_WER[key] = _wer(ref, loaded, manifest)
            out["wer"].update(manifest=str(manifest), fp32=_FP32_WER[key])
            if loaded.random_weights:
                out["wer_note"] = "random weights: WER/CER are meaningless"
            log(f"WER {out['wer']['wer']:.3f} (FP32 {out['wer']['fp32']['wer']:.3f}), "
                f"CER {out['wer']['cer']:.3f} (FP32 {out['wer']['fp32']['cer']:.3f})")
        finally:
            cand.close()
    return out


# ---------------------------------------------------------------- public API

def _default_manifest(manifest) -> Path | None:
    if manifest:
        path = Path(manifest)
        if not path.is_file():
            raise ManifestError(f"Manifest not found: {path}", "Give a CSV, TSV or JSONL of audio paths and texts.")
        return path
    return DEMO_TESTSET if DEMO_TESTSET.exists() else None


def _settings(precision, keep, calib_size, manifest, calib_manifest) -> dict:
    import onnxruntime
    s = {"variant": precision, "recipe": RECIPE, "onnxruntime": onnxruntime.__version__, "keep_fp32_ops": list(keep),
         "manifest_sha256": file_sha256(manifest) if manifest else None}
    if precision == "int8":
        s.update(calib_size=calib_size, calib_sha256=file_sha256(calib_manifest), op_types=list(INT8_OP_TYPES))
    return s


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def build_variant(loaded, precision: str, *, manifest=None, calib_size: int | None = None,
                  keep_fp32_ops=None, calib_manifest=None, force: bool = False, log=print) -> OnnxArtifact:
    """Build (or reuse) one precision variant of `loaded`'s FP32 ONNX export.

    precision: "fp16" (everything FP16 but I/O), "mixed" (FP16, `keep_fp32_ops` kept FP32; default
    DEFAULT_KEEP_FP32) or "int8" (static Q/DQ; the final projection, or `keep_fp32_ops`, left unquantized).
    manifest: labelled set for WER/CER (default data/demo_testset when present). INT8 calibrates on the first
    `calib_size` clips of `calib_manifest` (default: `manifest`). Settings left as None accept an existing
    variant built from the current FP32 export; explicit settings must match it or it is rebuilt."""
    if precision not in VARIANTS:
        raise ExportError(f"Unknown precision variant '{precision}'.", f"Choose from {', '.join(VARIANTS)}; "
                          "FP32 is the export itself (python -m core export).")
    fp32 = export_onnx(loaded, log=log)
    final = onnx_dir(loaded, precision)
    meta = read_meta(final)
    explicit = manifest is not None or calib_size is not None or keep_fp32_ops is not None or calib_manifest
    if meta and not force and not explicit and meta.get("source_sha256") == fp32.meta["sha256"] \
            and meta.get("recipe") == RECIPE:
        log(f"{precision} variant cached at {final}")
        return OnnxArtifact(final / "model.onnx", meta)

    manifest = _default_manifest(manifest)
    calib_size = DEFAULT_CALIB_SIZE if calib_size is None else int(calib_size)
    if calib_size < 1:
        raise ExportError(f"Calibration set size must be at least 1 (got {calib_size}).", "Use --calib-size 32.")
    if keep_fp32_ops is None:
        keep = list(DEFAULT_KEEP_FP32) if precision == "mixed" else [LM_HEAD] if precision == "int8" else []
    else:
        keep = list(dict.fromkeys(keep_fp32_ops))
        if precision == "fp16" and keep:
            raise ExportError("The fp16 variant keeps nothing in FP32.", "Use --precision mixed with --keep-fp32.")
    calib = None
    if precision == "int8":
        calib = _default_manifest(calib_manifest) if calib_manifest else manifest
        if calib is None:
            raise ManifestError("INT8 calibration needs real audio, and there is no labelled manifest here "
                                "(data/demo_testset is missing).", "Pass --manifest (or --calib-manifest) with a "
                                "CSV/TSV/JSONL of audio paths and texts.")
    settings = _settings(precision, keep, calib_size, manifest, calib)
    build_key = _digest({"source": fp32.meta["sha256"], **settings})
    if meta and not force and meta.get("build_key") == build_key:
        log(f"{precision} variant cached at {final}")
        return OnnxArtifact(final / "model.onnx", meta)

    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{precision}-", dir=final.parent))
    try:
        path = work / "model.onnx"
        started = dt.datetime.now(dt.timezone.utc)
        try:
            if precision == "int8":
                recipe = _to_int8(fp32.path, path, work, loaded, calib, calib_size, keep, log)
            else:
                recipe = _to_fp16(fp32.path, path, keep, log)
        except (ExportError, ManifestError):
            raise
        except Exception as err:
            raise ExportError(f"Building the {precision} variant failed: {err}",
                              "See the log above; try --force, or another precision.") from err
        import onnx
        onnx.checker.check_model(str(path), full_check=False)
        checks = _checks(loaded, fp32, path, precision, manifest, log)
        meta = {"source": loaded.source, "label": loaded.label, "random_weights": loaded.random_weights,
                "variant": precision, "precision": precision, "source_onnx": str(fp32.path),
                "source_sha256": fp32.meta["sha256"], "build_key": build_key, "recipe": RECIPE, "settings": settings,
                **recipe, **checks, "inputs": fp32.meta.get("inputs"), "outputs": ["logits"],
                "bytes": sum(f.stat().st_size for f in work.iterdir()), "sha256": file_sha256(path),
                "fp32_bytes": fp32.meta.get("bytes"),
                "build_seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        if precision == "int8":
            meta["calibration_in_eval_set"] = bool(manifest and file_sha256(calib) == file_sha256(manifest))
        write_json_atomic(work / "meta.json", meta)  # last: its presence marks the folder finished
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)
        log(f"saved {final / 'model.onnx'} ({meta['bytes'] / 2**20:.1f} MiB)")
        return OnnxArtifact(final / "model.onnx", meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def variant_status(loaded) -> list[dict]:
    """FP32 and every variant: built or not, size, and whether it was built from the current FP32 export."""
    fp32 = read_meta(onnx_dir(loaded, "fp32"))
    rows = []
    for name in ("fp32",) + VARIANTS:
        directory = onnx_dir(loaded, name)
        meta = read_meta(directory)
        row = {"variant": name, "built": meta is not None, "path": str(directory / "model.onnx"), "meta": meta}
        if meta:
            row["bytes"] = meta.get("bytes")
            row["stale"] = name != "fp32" and (fp32 is None or meta.get("source_sha256") != fp32.get("sha256"))
        rows.append(row)
    return rows


def summary_row(meta: dict) -> dict:
    """One flat table row of a variant's meta, for the CLI and the dashboard."""
    parity, wer = meta.get("parity") or {}, meta.get("wer") or {}
    kept = meta.get("kept_fp32") or {}
    return {"variant": meta.get("variant"), "size_mb": round((meta.get("bytes") or 0) / 2**20, 2),
            "max_abs_dlogit": parity.get("max_abs_logit_diff"),
            "agree": f"{parity.get('transcripts_agree')}/{parity.get('transcripts_total')}" if parity else None,
            "checked_on": parity.get("candidate"), "wer": wer.get("wer"), "cer": wer.get("cer"),
            "wer_fp32": (wer.get("fp32") or {}).get("wer"), "cer_fp32": (wer.get("fp32") or {}).get("cer"),
            "kept_fp32": ", ".join(f"{k}×{v}" for k, v in kept.items() if v) or
                         (f"{len(meta['excluded_nodes'])} nodes unquantized" if meta.get("excluded_nodes") else "")}


# ---------------------------------------------------------------- CLI

def cmd_variants(args):
    from .cli import _model, _table
    loaded = _model(args)
    manifest = args.manifest  # cli.main fills in the demo set's path even where it is absent
    if manifest and Path(manifest) == DEMO_TESTSET and not DEMO_TESTSET.exists():
        manifest = None
    rows = []
    for i, precision in enumerate(args.precision):
        print(f"progress: {i / len(args.precision):.2f} building {precision}", flush=True)
        art = build_variant(loaded, precision, manifest=manifest, calib_size=args.calib_size,
                            keep_fp32_ops=args.keep_fp32, calib_manifest=args.calib_manifest, force=args.force,
                            log=lambda m: print(f"  {m}", flush=True))
        rows.append(summary_row(art.meta))
        if art.meta.get("calibration_in_eval_set"):
            print("  note: INT8 was calibrated on clips of the evaluation manifest; its WER is optimistic. "
                  "Pass --calib-manifest with other audio for an unbiased figure.")
    print("progress: 1.00 done", flush=True)
    if loaded.random_weights:
        print("note: random weights — WER/CER are meaningless; parity is what matters here")
    print(_table(rows, ["variant", "size_mb", "max_abs_dlogit", "agree", "checked_on", "wer", "wer_fp32", "cer",
                        "cer_fp32", "kept_fp32"]))


def add_cli(add):
    s = add("variants", cmd_variants, "Build ONNX precision variants (FP16, mixed, INT8) with parity and WER/CER.")
    s.add_argument("--precision", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    s.add_argument("--manifest", default=None, help="labelled set for WER/CER and INT8 calibration "
                                                    "(default: data/demo_testset when present)")
    s.add_argument("--calib-manifest", default=None, help="audio for INT8 calibration (default: --manifest)")
    s.add_argument("--calib-size", type=int, default=None, help=f"INT8 calibration clips (default {DEFAULT_CALIB_SIZE})")
    s.add_argument("--keep-fp32", nargs="+", default=None, metavar="OP",
                   help="ONNX op types kept FP32 in 'mixed' (and left unquantized in 'int8'); 'lm_head' is the "
                        f"final projection. Default mixed: {' '.join(DEFAULT_KEEP_FP32)}; int8: lm_head")
    s.add_argument("--force", action="store_true", help="rebuild even if cached")
    return s
