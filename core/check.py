"""The conformance matrix: every backend against PyTorch FP32 on the same machine, at every batch size and
length that exercises bucketing, splitting, padding and buffer reuse — not only the benchmarked shape.

Cells: uniform batches (every row a different stretch of real speech) at each batch size x length; padded mixes
of all lengths in one batch; and repeats (data A, other data B, then A again, at batch sizes that split), where a
stale or shared output buffer shows up. Per cell: max |delta logit| over the real frames (relative to the
reference's logit scale), frame argmax agreement and greedy transcript agreement, gated per precision."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backends import make_backend
from .backends.fast_backend import BUCKETS_S
from .bench import tile_speech
from .envinfo import environment
from .paths import SPEECH_CLIPS
from .transcribe import decode, features, real_frames

BATCHES = (1, 2, 3, 8, 9, 16, 17, 33)


def lengths_for(buckets_s) -> dict:
    """Audio lengths (s) named for a set of length buckets (the fast backend's; the other runtimes have none)."""
    b = sorted(buckets_s)
    mid = min(3, len(b) - 2)
    return {"inside a bucket": round(b[0] * 0.7, 2), "exactly a bucket": float(b[mid]),
            "between buckets": (b[mid] + b[mid + 1]) / 2, "past the largest bucket": b[-1] + 1.5}


LENGTHS_S = lengths_for(BUCKETS_S)
REPEAT_BATCHES = (9, 17)

# precision -> (max |delta logit| / max(1, max |reference logit|), min frame argmax agreement, max character error
# rate of the greedy transcripts against the reference's). Transcripts are gated on trained models only: on random
# weights near-tied logits flip characters at every precision (H200, 2026-11-29: FP32 ONNX Runtime at 3.6e-6 relative
# |delta logit| still changed 2 of 470 transcripts), so there the logits and frames decide.
TOLERANCES = {"fp32": (1e-3, 0.99, 0.01), "fp16": (5e-2, 0.90, 0.02), "bf16": (1e-1, 0.90, 0.03),
              "mixed": (5e-2, 0.90, 0.02), "int8": (5e-1, 0.80, 0.05), "int4w": (5e-1, 0.80, 0.05),
              "int8w": (5e-1, 0.80, 0.05), "fp8": (5e-1, 0.80, 0.05)}


@dataclass
class Cell:
    label: str
    items: list          # audio arrays at the model's rate, one per row
    again: list | None = None   # for repeats: other data to run in between, then `items` again

    @property
    def batch(self) -> int:
        return len(self.items)


def speech_source(loaded, clips: int = SPEECH_CLIPS) -> np.ndarray:
    """Real speech laid end to end (the shipped held-out clips, or noise if they were removed)."""
    from .export import parity_audio
    return np.concatenate([a.samples for a in parity_audio(loaded, n=clips)])


def cells(loaded, source: np.ndarray, batches=BATCHES, lengths: dict | None = None, seed: int = 0) -> list[Cell]:
    lengths = lengths or LENGTHS_S
    rng = np.random.default_rng(seed)
    rate = loaded.sample_rate

    def batch_of(seconds):
        return [tile_speech(source, int(s * rate), rng) for s in seconds]
    out = [Cell(f"{b} x {s:g} s ({name})", batch_of([s] * b)) for b in batches for name, s in lengths.items()]
    mix = list(lengths.values())
    out += [Cell(f"{b} x mixed {'/'.join(f'{s:g}' for s in mix)} s (padded)", batch_of(mix * (b // len(mix)) +
                                                                                  mix[:b % len(mix)]))
            for b in batches if b > 1 and len(mix) > 1]
    first = mix[min(1, len(mix) - 1)]
    out += [Cell(f"{b} x {first:g} s, again after other data (stale buffers)", batch_of([first] * b),
                 again=batch_of([first] * b)) for b in REPEAT_BATCHES if b in batches]
    return out


def cell_logits(backend, loaded, items):
    values, mask = features(loaded.processor, items, loaded.sample_rate)
    return real_frames(loaded.model.config, backend.logits(values, mask), mask)


def compare(loaded, ref: list[np.ndarray], out: list[np.ndarray]) -> dict:
    """Real-frame logits of a reference and a candidate, row by row."""
    diff, scale, same, frames, ref_texts, out_texts = 0.0, 1.0, 0, 0, [], []
    for r, o in zip(ref, out):
        if o.shape != r.shape or not np.isfinite(o).all():
            return {"max_abs_dlogit": float("inf"), "scale": scale, "frame_agree": 0.0, "transcripts_agree": 0,
                    "transcripts_total": len(ref), "transcript_cer": 1.0,
                    "error": f"shape {o.shape} vs {r.shape} or NaN/Inf logits"}
        diff = max(diff, float(np.abs(o - r).max()))
        scale = max(scale, float(np.abs(r).max()))
        same += int((o.argmax(-1) == r.argmax(-1)).sum())
        frames += len(r)
        ref_texts.append(decode(loaded.processor, r[None])[0])
        out_texts.append(decode(loaded.processor, o[None])[0])
    return {"max_abs_dlogit": diff, "scale": scale, "frame_agree": same / max(frames, 1),
            "transcripts_agree": sum(a == b for a, b in zip(ref_texts, out_texts)), "transcripts_total": len(ref),
            "transcript_cer": text_cer(ref_texts, out_texts)}


def text_cer(references: list[str], hypotheses: list[str]) -> float:
    """Character error rate of one backend's transcripts against the reference backend's (jiwer)."""
    import jiwer
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r]
    if not pairs:  # the reference said nothing at all: any text is an error
        return float(any(hypotheses))
    return float(jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]))


def _worst(ms: list[dict]) -> dict:
    """One figure set for several comparisons: the largest relative difference, the lowest agreements."""
    bad = [m for m in ms if m.get("error")]
    if bad:
        return bad[0]
    out = dict(max(ms, key=lambda m: m["max_abs_dlogit"] / m["scale"]))
    out["frame_agree"] = min(m["frame_agree"] for m in ms)
    out["transcripts_agree"] = min(m["transcripts_agree"] for m in ms)
    out["transcript_cer"] = max(m["transcript_cer"] for m in ms)
    return out


def verdict(m: dict, precision: str, random_weights: bool) -> tuple[bool, str]:
    tol, min_frames, max_cer = TOLERANCES.get(precision, TOLERANCES["int8"])
    if m.get("error"):
        return False, m["error"]
    why = []
    if m["max_abs_dlogit"] / m["scale"] > tol:
        why.append(f"|dlogit| {m['max_abs_dlogit']:.3g} > {tol:g} x {m['scale']:.3g}")
    if m["frame_agree"] < min_frames:
        why.append(f"frame agreement {m['frame_agree']:.3f} < {min_frames}")
    if not random_weights and m["transcript_cer"] > max_cer:
        why.append(f"transcript CER {m['transcript_cer']:.2%} > {max_cer:.0%}")
    return not why, "; ".join(why)


def check_backend(backend, loaded, matrix: list[Cell], refs: dict, progress=None) -> list[dict]:
    env = environment()
    rows = []
    for cell in matrix:
        try:
            out = cell_logits(backend, loaded, cell.items)
            if cell.again is not None:  # other data through the same shapes, then the first data again
                between = compare(loaded, refs[cell.label, "again"], cell_logits(backend, loaded, cell.again))
                repeat = cell_logits(backend, loaded, cell.items)
                m = compare(loaded, out, repeat)
                first = compare(loaded, refs[cell.label], out)
                m = _worst([first, between, m])
            else:
                m = compare(loaded, refs[cell.label], out)
        except Exception as err:  # noqa: BLE001 - a backend that raises on a shape fails that cell, the rest go on
            m = {"max_abs_dlogit": float("inf"), "scale": 1.0, "frame_agree": 0.0, "transcripts_agree": 0,
                 "transcripts_total": cell.batch, "transcript_cer": 1.0, "error": f"{type(err).__name__}: {err}".splitlines()[0]}
        ok, why = verdict(m, backend.precision, loaded.random_weights)
        tol, min_frames, max_cer = TOLERANCES.get(backend.precision, TOLERANCES["int8"])
        row = {"kind": "conformance", "model": loaded.source, "model_label": loaded.label,
               "random_weights": loaded.random_weights, **backend.row_fields(), "cell": cell.label, "batch": cell.batch,
               "audio_s": round(max(len(x) for x in cell.items) / loaded.sample_rate, 3),
               "max_abs_dlogit": m["max_abs_dlogit"], "rel_dlogit": m["max_abs_dlogit"] / m["scale"],
               "frame_agree": m["frame_agree"], "transcripts_agree": m["transcripts_agree"],
               "transcripts_total": m["transcripts_total"], "transcript_cer": m["transcript_cer"], "passed": ok,
               "reason": why, "tolerance": {"rel_dlogit": tol, "frame_agree": min_frames,
                                            "transcript_cer": None if loaded.random_weights else max_cer}, "env": env}
        rows.append(row)
        if progress:
            progress(row)
    return rows


def latest_verdicts(source: str) -> dict[str, dict]:
    """The newest saved conformance result of each backend for one model: {backend: {run_id, passed, cells,
    first_failure}} — what the Build page shows beside each artifact's gate, which measures other things."""
    from .results import rows
    out: dict[str, dict] = {}
    for r in rows(kind="conformance", model=source):   # newest run first
        v = out.setdefault(r["backend"], {"run_id": r["run_id"], "passed": 0, "cells": 0, "first_failure": None})
        if r["run_id"] != v["run_id"]:   # an older run of the same backend
            continue
        v["cells"] += 1
        v["passed"] += bool(r["passed"])
        if not r["passed"] and v["first_failure"] is None:
            v["first_failure"] = f"{r['cell']}: {r['reason']}"
    return out


def reference_spec() -> str:
    """PyTorch FP32 on this machine's GPU when it has one, else on the CPU."""
    from .backends import availability
    return "torch:fp32:cuda" if availability("torch:fp32:cuda")[0] else "torch:fp32:cpu"


def run_check(loaded, specs: list[str], reference: str | None = None, batches=BATCHES, lengths: dict | None = None,
              progress=None, options: dict | None = None) -> list[dict]:
    """Conformance rows for each backend spec against the reference (one row per cell); options: spec -> the
    backend's options (e.g. the fast backend's buckets_s, a Triton url)."""
    reference = reference or reference_spec()
    # made (not loaded) before the reference runs, so an unknown option or backend fails at once
    backends = [make_backend(spec, loaded, **(options or {}).get(spec, {})) for spec in specs]
    matrix = cells(loaded, speech_source(loaded), batches, lengths)
    refs = {}
    with make_backend(reference, loaded) as ref:   # torch:fp32:cuda loads with TF32 off
        for cell in matrix:
            refs[cell.label] = cell_logits(ref, loaded, cell.items)
            if cell.again is not None:
                refs[cell.label, "again"] = cell_logits(ref, loaded, cell.again)
    rows = []
    for backend in backends:
        with backend:
            rows += [dict(r, reference=reference) for r in check_backend(backend, loaded, matrix, refs, progress)]
    return rows
