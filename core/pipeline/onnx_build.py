"""How the ONNX artifacts are built and measured (the specs are in onnx_specs): the export through torch.onnx,
the variants through ONNX Runtime's float16 converter (BF16: re-typed from it) and quantizers (int8w: core.variants'
own weight-only edit)."""
from __future__ import annotations

from pathlib import Path

from ..backends import BackendSpec
from ..backends.ort_backend import OrtBackend
from ..errors import ExportError, ManifestError
from ..export import check_and_infer, export_graph
from .gates import Gate
from .onnx_specs import OPSET, OnnxExport, OnnxVariant
from .store import Artifact, Builder, build
from .verify import default_manifest, measure


class ExportBuilder(Builder):
    def __init__(self, manifest: Path | None):
        self.manifest = manifest

    def measured_with(self):
        from .verify import MEASURED_WITH
        return {"manifest": str(self.manifest) if self.manifest else None, **MEASURED_WITH}

    def produce(self, spec, tmp, log):
        path = tmp / spec.file
        log(f"exporting {spec.loaded.source} with the {spec.settings['exporter']} exporter, opset "
            f"{spec.settings['opset']} ...")
        try:
            inputs = export_graph(spec.loaded, path, spec.settings["opset"], spec.settings["exporter"])
        except Exception as err:
            raise ExportError(f"torch.onnx.export failed: {err}", "Try --exporter dynamo, or another opset.") from err
        log("onnx.checker and shape inference ...")
        check_and_infer(path)
        return {"input_names": inputs, "outputs": ["logits"], "dynamic_axes": {"batch": 0, "samples/frames": 1}}

    def measure(self, spec, tmp, log):
        with OrtBackend(BackendSpec("ort", "fp32", "cpu"), tmp / spec.file) as candidate:
            return measure(spec.loaded, candidate, self.manifest, log)


class VariantBuilder(ExportBuilder):
    def __init__(self, manifest: Path | None, parent: Artifact):
        self.manifest, self.parent = manifest, parent

    def produce(self, spec, tmp, log):
        from ..variants import _to_bf16, _to_fp16, _to_int4w, _to_int8w, _to_qdq
        dst = tmp / spec.file
        keep = spec.settings["keep_fp32_ops"]
        try:
            if spec.precision in ("int8", "fp8"):
                calib = Path(spec.settings["calib_manifest"])
                if not calib.is_file():
                    raise ManifestError(f"INT8 calibration needs real audio: no manifest at {calib}.",
                                        "Pass --calib-manifest (a CSV/TSV/JSONL of audio paths and texts).")
                recipe = _to_qdq(self.parent.path, dst, tmp, spec.loaded, calib, spec.settings["calib_size"], keep,
                                 log, fp8=spec.precision == "fp8", calib_skip=spec.settings["calib_skips_first"])
            elif spec.precision == "int4w":
                recipe = _to_int4w(self.parent.path, dst, keep, spec.settings["block_size"], log)
            elif spec.precision == "int8w":
                recipe = _to_int8w(self.parent.path, dst, keep, log)
            elif spec.precision == "bf16":
                recipe = _to_bf16(self.parent.path, dst, keep, log)
            else:
                recipe = _to_fp16(self.parent.path, dst, keep, log)
        except (ExportError, ManifestError):
            raise
        except Exception as err:
            raise ExportError(f"Building the {spec.precision} variant failed: {err}",
                              "See the log above; try --force, or another precision.") from err
        import onnx
        onnx.checker.check_model(str(dst), full_check=False)
        if spec.precision in ("int8", "fp8"):  # calibrating on the set WER is scored on flatters it: say so
            recipe["calibration_in_eval_set"] = bool(self.manifest and Path(spec.settings["calib_manifest"]).resolve()
                                                     == Path(self.manifest).resolve())
        return {**recipe, "fp32_bytes": self.parent.meta.get("bytes")}

    def measure(self, spec, tmp, log):
        from ..variants import _open_variant
        candidate, verified_by = _open_variant(tmp / spec.file, spec.precision, spec.loaded, log)
        try:
            return {**measure(spec.loaded, candidate, self.manifest, log), "verified_by": verified_by}
        finally:
            candidate.close()


def _manifest(manifest) -> Path | None:
    if manifest is None:
        return default_manifest()
    path = Path(manifest)
    if not path.is_file():
        raise ManifestError(f"Manifest not found: {path}", "Give a CSV, TSV or JSONL of audio paths and texts.")
    return path


def build_onnx(loaded, opset: int = OPSET, exporter: str = "torchscript", gate: Gate | None = None, manifest=None,
               force: bool = False, log=print) -> Artifact:
    """The FP32 ONNX export of `loaded`, verified against PyTorch FP32 (built once, then reused)."""
    spec = OnnxExport(loaded, opset, exporter)
    return build(spec, ExportBuilder(_manifest(manifest)), gate or Gate.default("fp32"), force, log)


def build_variant(loaded, precision: str, *, manifest=None, calib_size: int | None = None, keep_fp32_ops=None,
                  calib_manifest=None, gate: Gate | None = None, force: bool = False, log=print) -> Artifact:
    """One precision variant of the FP32 export (built first if needed), verified against PyTorch FP32."""
    manifest = _manifest(manifest)
    calib = _manifest(calib_manifest) if calib_manifest else manifest
    spec = OnnxVariant(loaded, precision, keep_fp32_ops, calib_size, calib)
    parent = build_onnx(loaded, log=log)
    if not parent.usable:
        raise ExportError(f"The FP32 export it derives from was rejected: {'; '.join(parent.meta['reasons'])}.",
                          "Fix the export first (python -m core build onnx).")
    return build(spec, VariantBuilder(manifest, parent), gate or Gate.default(precision), force, log)
