"""The figures a gate judges, measured the same way for every stage: the candidate backend against PyTorch FP32
on real speech (one clip at a time and as a padded batch), the conformance matrix at its smallest batches, and
WER/CER of both on a labelled set."""
from __future__ import annotations

from pathlib import Path

from ..backends import BackendSpec
from ..backends.torch_backend import TorchBackend
from ..check import reference_spec
from ..export import compare, parity_audio
from ..paths import DEMO_TESTSET
from .fingerprint import file_sha256, model_fingerprint

_REFERENCE_WER: dict[tuple, dict] = {}   # (model, reference, manifest) -> scores: FP32 is scored once a process
# The conformance cells every gate runs: batch 1 and 3 at every length of the matrix (inside, at, between and past
# the length buckets) and a padded mix. The labelled set alone passed variants that fail short clips and padded
# batches (demo model, CPU, 2026-11-29: INT8 2 of 41 matrix cells, FP8 21, int4w 38 — all "verified" by WER).
GATE_BATCHES = (1, 3)
MEASURED_WITH = {"conformance": f"batches {', '.join(map(str, GATE_BATCHES))} x every matrix length + padded mix"}


def reference(loaded) -> TorchBackend:
    """PyTorch FP32 on the GPU when there is one (TF32 off), else on the CPU: the conformance check's reference."""
    return TorchBackend(BackendSpec.parse(reference_spec()), loaded)


def conformance(loaded, ref, candidate, log=print) -> dict:
    """The candidate through the conformance matrix's cells at GATE_BATCHES, against `ref`, with the matrix's own
    per-precision limits (core.check)."""
    from ..check import cell_logits, cells, check_backend, speech_source
    matrix = cells(loaded, speech_source(loaded), batches=GATE_BATCHES)
    log(f"conformance: {len(matrix)} cells (batches {', '.join(map(str, GATE_BATCHES))}) ...")
    refs = {cell.label: cell_logits(ref, loaded, cell.items) for cell in matrix}
    rows = check_backend(candidate, loaded, matrix, refs)
    bad = [r for r in rows if not r["passed"]]
    log(f"conformance: {len(rows) - len(bad)}/{len(rows)} cells pass")
    return {"conformance_cells": len(rows), "conformance_failed": len(bad),
            "conformance_first_failure": f"{bad[0]['cell']}: {bad[0]['reason']}" if bad else None}


def default_manifest() -> Path | None:
    return DEMO_TESTSET if DEMO_TESTSET.exists() else None


def measure(loaded, candidate, manifest: Path | None, log=print) -> dict:
    """Gate figures of a loaded candidate backend."""
    from ..wer import evaluate
    with reference(loaded) as ref:
        log(f"parity of {candidate.name} against {ref.name} on real speech ...")
        parity = compare(loaded, ref, candidate, parity_audio(loaded))
        out = {"max_abs_dlogit": parity["max_abs_logit_diff"],
               "rel_dlogit": parity["max_abs_logit_diff"] / max(1.0, parity["logit_scale"]),
               "transcripts_agree": parity["transcripts_agree"], "transcripts_total": parity["transcripts_total"],
               "reference": ref.name, "candidate": candidate.name, "parity_clips": parity["clips"]}
        log(f"max |Δlogit| {out['max_abs_dlogit']:.3g} ({out['rel_dlogit']:.2g} of the logit scale), transcripts "
            f"agree {out['transcripts_agree']}/{out['transcripts_total']}")
        out.update(conformance(loaded, ref, candidate, log))
        if manifest is None:
            out["wer_note"] = "no labelled set (data/demo_testset missing and none given): WER not measured"
            return out
        log(f"WER/CER on {manifest} ...")
        key = (model_fingerprint(loaded), ref.name, file_sha256(manifest))
        if key not in _REFERENCE_WER:
            r = evaluate(ref, loaded, manifest)
            _REFERENCE_WER[key] = {"wer": r["wer"], "cer": r["cer"], "n": r["n"]}
        r = evaluate(candidate, loaded, manifest)
    fp32 = _REFERENCE_WER[key]
    out.update(wer=r["wer"], cer=r["cer"], n=r["n"], wer_fp32=fp32["wer"], cer_fp32=fp32["cer"],
               wer_delta_points=100 * (r["wer"] - fp32["wer"]), manifest=str(manifest),
               wer_judged=not loaded.random_weights)
    if loaded.random_weights:
        out["wer_note"] = "random weights: WER/CER are meaningless and not judged"
    log(f"WER {r['wer']:.3f} (FP32 {fp32['wer']:.3f}), CER {r['cer']:.3f} (FP32 {fp32['cer']:.3f})")
    return out
