"""PyTorch -> ONNX with dynamic batch/time axes, checked, shape-inferred, and parity-tested on real audio."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import Audio
from .envinfo import environment
from .errors import ExportError, ParityError
from .paths import DEMO_TESTSET, artifacts_dir, write_json_atomic

OPSET = 17
TWO_GB = 2 * 1024**3


@dataclass
class OnnxArtifact:
    path: Path
    meta: dict

    @property
    def dir(self) -> Path:
        return self.path.parent


def onnx_dir(loaded, variant: str = "fp32") -> Path:
    return artifacts_dir() / loaded.key / "onnx" / variant


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_meta(directory: Path) -> dict | None:
    """The metadata of a finished artifact, or None (meta.json is written last, so its presence means done)."""
    try:
        return json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def parity_audio(loaded, n: int = 2) -> list[Audio]:
    """Real speech for parity checks: the first clips of the shipped held-out set."""
    from .wer import load_manifest
    from .audio import load_audio
    if DEMO_TESTSET.exists():
        return [load_audio(p, loaded.sample_rate) for p, _ in load_manifest(DEMO_TESTSET)[:n]]
    rng = np.random.default_rng(0)  # only if the repo's test set was removed: two lengths, to exercise padding
    return [Audio((0.1 * rng.standard_normal(int(loaded.sample_rate * s))).astype(np.float32), loaded.sample_rate,
                  f"noise-{s}s") for s in (3, 2)][:n]


def compare(loaded, reference, candidate, clips: list[Audio]) -> dict:
    """Run both backends on the clips (one by one and as a padded batch); logit and transcript agreement."""
    from .transcribe import decode, features, frame_lengths
    diffs, agree, texts = [], 0, []
    batches = [[c.samples] for c in clips] + ([[c.samples for c in clips]] if len(clips) > 1 else [])
    for batch in batches:
        values, mask = features(loaded.processor, batch, loaded.sample_rate)
        ref, out = reference.logits(values, mask), candidate.logits(values, mask)
        if not np.isfinite(out).all():
            raise ParityError(f"{candidate.name} produced NaN/Inf logits.", "The conversion is broken; see the log.")
        # compare only frames that belong to real (unpadded) audio
        for i, n in enumerate(frame_lengths(loaded.model.config, mask)):
            diffs.append(float(np.abs(ref[i, :n] - out[i, :n]).max()))
            a, b = decode(loaded.processor, ref[i:i + 1, :n])[0], decode(loaded.processor, out[i:i + 1, :n])[0]
            agree += a == b
            texts.append({"reference": a, "candidate": b})
    n = len(texts)
    return {"max_abs_logit_diff": max(diffs), "transcripts_agree": agree, "transcripts_total": n,
            "agreement": agree / n, "clips": [c.name for c in clips],
            "audio_seconds": round(sum(c.duration for c in clips), 2), "examples": texts[:4]}


def _export_graph(loaded, path: Path, opset: int, exporter: str) -> list[str]:
    import torch
    model = loaded.model
    use_mask = loaded.uses_attention_mask
    names = ["input_values"] + (["attention_mask"] if use_mask else [])
    x = torch.randn(2, loaded.sample_rate)
    args = (x, torch.ones_like(x, dtype=torch.long)) if use_mask else (x,)
    axes = {n: {0: "batch", 1: "samples"} for n in names}
    axes["logits"] = {0: "batch", 1: "frames"}

    class Logits(torch.nn.Module):  # plain tensor output instead of a ModelOutput
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_values, attention_mask=None):
            return self.m(input_values, attention_mask=attention_mask).logits

    wrapped = Logits(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about Python bools; parity is checked below
        if exporter == "dynamo":
            batch, samples = torch.export.Dim("batch", max=256), torch.export.Dim("samples", min=800)
            torch.onnx.export(wrapped, args, str(path), dynamo=True, input_names=names, output_names=["logits"],
                              opset_version=max(opset, 18), dynamic_shapes=tuple({0: batch, 1: samples} for _ in names),
                              external_data=True)
        else:
            # The TorchScript exporter: seconds instead of minutes, and the graph TensorRT parses most reliably.
            torch.onnx.export(wrapped, args, str(path), dynamo=False, input_names=names, output_names=["logits"],
                              opset_version=opset, dynamic_axes=axes, do_constant_folding=True)
    return names


def check_and_infer(path: Path) -> None:
    """onnx.checker + shape inference, in place; by path so models over 2 GB work."""
    import onnx
    onnx.checker.check_model(str(path), full_check=False)
    onnx.shape_inference.infer_shapes_path(str(path), str(path))
    if path.stat().st_size > TWO_GB:  # protobuf cannot hold it: move weights to external data
        model = onnx.load(str(path))
        onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data")


def export_onnx(loaded, out_dir: Path | None = None, opset: int = OPSET, exporter: str = "torchscript",
                tolerance: float = 2e-3, force: bool = False, log=print) -> OnnxArtifact:
    """Export (or reuse) the FP32 ONNX model of `loaded`; raises ParityError if it disagrees with PyTorch."""
    final = Path(out_dir) if out_dir else onnx_dir(loaded, "fp32")
    meta = read_meta(final)
    if meta and not force and meta.get("source") == loaded.source and meta.get("opset") == opset:
        log(f"ONNX model cached at {final}")
        return OnnxArtifact(final / "model.onnx", meta)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=final.parent))
    try:
        path = work / "model.onnx"
        log(f"exporting {loaded.source} with the {exporter} exporter, opset {opset} ...")
        try:
            inputs = _export_graph(loaded, path, opset, exporter)
        except Exception as err:
            raise ExportError(f"torch.onnx.export failed: {err}", "Try --exporter dynamo, or another opset.") from err
        log("onnx.checker and shape inference ...")
        check_and_infer(path)
        log("parity against PyTorch on real audio ...")
        from .backends import BackendSpec
        from .backends.ort_backend import OrtBackend
        from .backends.torch_backend import TorchBackend
        with TorchBackend(BackendSpec("torch"), loaded) as ref, OrtBackend(BackendSpec("ort"), path) as cand:
            parity = compare(loaded, ref, cand, parity_audio(loaded))
        log(f"max |Δlogit| {parity['max_abs_logit_diff']:.2e}, transcripts agree "
            f"{parity['transcripts_agree']}/{parity['transcripts_total']}")
        if parity["max_abs_logit_diff"] > tolerance or parity["agreement"] < 1.0:
            raise ParityError(f"ONNX export disagrees with PyTorch: max |Δlogit| {parity['max_abs_logit_diff']:.3g} "
                              f"(tolerance {tolerance}), transcripts agree {parity['transcripts_agree']}/"
                              f"{parity['transcripts_total']}.", "Not saved. Try another opset or exporter.")
        env = environment()
        meta = {"source": loaded.source, "label": loaded.label, "random_weights": loaded.random_weights,
                "variant": "fp32", "precision": "fp32", "exporter": f"torch.onnx ({exporter})", "opset": opset,
                "inputs": inputs, "outputs": ["logits"], "dynamic_axes": {"batch": 0, "samples/frames": 1},
                "bytes": sum(f.stat().st_size for f in work.iterdir()), "sha256": file_sha256(path),
                "parity": parity, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "versions": {k: env[k] for k in ("torch", "transformers", "onnx", "onnxruntime")}}
        write_json_atomic(work / "meta.json", meta)
        if final.exists():
            shutil.rmtree(final)
        os.replace(work, final)  # the whole folder appears at once
        log(f"saved {final / 'model.onnx'}")
        return OnnxArtifact(final / "model.onnx", meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_onnx(loaded, precision: str = "fp32") -> Path:
    """The ONNX file for a precision, exported or derived on first use and cached after."""
    if precision == "fp32":
        return export_onnx(loaded, log=lambda *_: None).path
    from .variants import build_variant  # FP16 / mixed / INT8 derive from the FP32 export
    return build_variant(loaded, precision).path
