"""PyTorch -> ONNX with dynamic batch/time axes, checked and shape-inferred; parity of two backends on real audio.
The build itself (temporary folder, gate, atomic commit) is core.pipeline's."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .audio import Audio
from .errors import ParityError
from .paths import DEMO_TESTSET

TWO_GB = 2 * 1024**3


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
    diffs, agree, texts, scale = [], 0, [], 0.0
    batches = [[c.samples] for c in clips] + ([[c.samples for c in clips]] if len(clips) > 1 else [])
    for batch in batches:
        values, mask = features(loaded.processor, batch, loaded.sample_rate)
        ref, out = reference.logits(values, mask), candidate.logits(values, mask)
        if not np.isfinite(out).all():
            raise ParityError(f"{candidate.name} produced NaN/Inf logits.", "The conversion is broken; see the log.")
        # compare only frames that belong to real (unpadded) audio
        for i, n in enumerate(frame_lengths(loaded.model.config, mask)):
            diffs.append(float(np.abs(ref[i, :n] - out[i, :n]).max()))
            scale = max(scale, float(np.abs(ref[i, :n]).max()))
            a, b = decode(loaded.processor, ref[i:i + 1, :n])[0], decode(loaded.processor, out[i:i + 1, :n])[0]
            agree += a == b
            texts.append({"reference": a, "candidate": b})
    n = len(texts)
    return {"max_abs_logit_diff": max(diffs), "logit_scale": scale, "transcripts_agree": agree, "transcripts_total": n,
            "agreement": agree / n, "clips": [c.name for c in clips],
            "audio_seconds": round(sum(c.duration for c in clips), 2), "examples": texts[:4]}


def export_graph(loaded, path: Path, opset: int, exporter: str) -> list[str]:
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
