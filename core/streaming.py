"""Streaming latency: a long file fed as if it arrived in real time, chunk by chunk, through any backend.

NeMo's buffered CTC inference is the model: each step runs the model on [left context | chunk | right context] and
keeps only the logit frames of the chunk. The right context is look-ahead, so a chunk's text can appear only once its
right context has arrived. Arrival is simulated with a clock, not by sleeping (sample p arrives at p / rate s): a
chunk starts when the last sample of its buffer has arrived and the previous chunk is done, and its text is
available when its compute (features -> forward -> greedy text) ends. Lag behind real time = text available - the
chunk's audio end. `realtime=True` sleeps until each buffer has arrived instead: the clock is then the wall clock.

Frame bookkeeping: the chunk and the contexts are whole encoder frames (the feature encoder's stride: 20 ms for
wav2vec2), so every buffer starts on a frame boundary and its frames are the file's frames shifted by a whole number.
Chunk k keeps the file's frames [k * chunk, (k + 1) * chunk), the last one up to the file's frame count: together
they cover the file exactly once. A frame needs a little audio past its end (the encoder's receptive field, 5 ms for
wav2vec2), so the right context is never shorter than that, even when 0 is asked for.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .audio import Audio
from .errors import AudioError, ManifestError, WorkbenchError
from .transcribe import conv_frames, decode_ids, features, frame_span, frames_per_sample, min_samples, transcribe


class StreamingError(WorkbenchError):
    pass


@dataclass(frozen=True)
class Chunk:
    index: int
    frames: tuple[int, int]   # the file's logit frames this chunk keeps, [first, end)
    audio: tuple[int, int]    # the samples it answers for: its audio end is what its lag is measured from
    buffer: tuple[int, int]   # the samples the model runs on: left context + chunk + right context


@dataclass
class StreamResult:
    audio_name: str
    audio_s: float
    backend: str
    chunk_s: float            # as used: whole encoder frames
    left_s: float
    right_s: float            # look-ahead as used (at least the receptive field's overhang)
    realtime: bool
    chunks: list[dict]        # per chunk: times, compute_ms, lag_s, the transcript as it stood then
    text: str                 # the streamed transcript
    offline_text: str | None = None
    wer: float | None = None  # streamed against offline transcription of the same file (jiwer via core.wer)
    cer: float | None = None
    score_note: str | None = None
    warmup_buffers: int = 0
    logits: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict:
        ms = np.array([c["compute_ms"] for c in self.chunks])
        lag = np.array([c["lag_s"] for c in self.chunks])
        return {"chunks": len(self.chunks), "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
                "lag_p50_s": float(np.percentile(lag, 50)), "lag_p99_s": float(np.percentile(lag, 99)),
                "lag_max_s": float(lag.max()), "lag_final_s": float(lag[-1]),
                # compute per audio second: above 1 the stream falls further behind with every chunk
                "rtf": float(ms.sum() / 1e3 / self.audio_s)}


def stride_samples(model_config) -> int:
    return int(round(1.0 / frames_per_sample(model_config)))


def _rounded(model_config, rate: int, chunk_s: float, left_s: float, right_s: float) -> tuple[int, int, int]:
    """(chunk frames, left samples, right samples) as used: whole encoder frames; the right context at least the
    receptive field's overhang past a frame (80 samples for wav2vec2: 400-sample field, 320-sample stride)."""
    if not chunk_s > 0 or left_s < 0 or right_s < 0:
        raise StreamingError(f"Chunk {chunk_s:g} s, left {left_s:g} s, right {right_s:g} s: the chunk must be longer "
                             "than 0 and the contexts not negative.", "Use e.g. --chunk-s 2 --left-s 4 --right-s 1.")
    stride = stride_samples(model_config)
    right = max(int(round(right_s * rate / stride)) * stride, min_samples(model_config) - stride)
    return max(1, int(round(chunk_s * rate / stride))), int(round(left_s * rate / stride)) * stride, right


def plan(n_samples: int, model_config, rate: int, chunk_s: float = 2.0, left_s: float = 4.0,
         right_s: float = 1.0) -> list[Chunk]:
    """The chunks of a file of n_samples: frames kept, audio answered for, and buffer, rounded to whole frames."""
    shortest = min_samples(model_config)
    if n_samples < shortest:
        raise AudioError(f"The audio is {n_samples / rate * 1e3:.0f} ms long; the model needs at least "
                         f"{shortest / rate * 1e3:.0f} ms for one output frame.", "Stream a longer file.")
    per_chunk, left, right = _rounded(model_config, rate, chunk_s, left_s, right_s)
    stride = stride_samples(model_config)
    total = int(conv_frames(model_config, n_samples))
    out = []
    for k, first in enumerate(range(0, total, per_chunk)):
        end = min(first + per_chunk, total)
        start_sample, end_sample = first * stride, (n_samples if end == total else end * stride)
        out.append(Chunk(k, (first, end), (start_sample, end_sample),
                         (max(0, start_sample - left), min(n_samples, end * stride + right))))
    return out


class GrowingText:
    """The greedy transcript of a growing sequence of frame ids, decoding only what can still change.

    Kept frames are final (a later chunk never revises them), and CTC merges repeats only between neighbouring
    frames, so the ids up to a word-delimiter frame decode once for good: each step decodes the ids after the last
    delimiter (one partial word) instead of the whole transcript, so its cost does not grow with the file."""

    def __init__(self, processor):
        self.processor = processor
        self.delimiter = getattr(getattr(processor, "tokenizer", processor), "word_delimiter_token_id", None)
        self.committed, self.tail = "", np.zeros(0, np.int64)

    @staticmethod
    def _join(a: str, b: str) -> str:   # the cut sits on a word delimiter: the parts meet at a space
        return " ".join(p for p in (a, b) if p)

    def _decode(self, ids: np.ndarray) -> str:
        return decode_ids(self.processor, ids[None])[0] if len(ids) else ""

    def extend(self, ids: np.ndarray) -> str:
        self.tail = np.concatenate([self.tail, np.asarray(ids, np.int64)])
        cuts = np.flatnonzero(self.tail == self.delimiter) if self.delimiter is not None else []
        if len(cuts):
            j = int(cuts[-1]) + 1
            self.committed = self._join(self.committed, self._decode(self.tail[:j]))
            self.tail = self.tail[j:]
        return self._join(self.committed, self._decode(self.tail))


def _forward(backend, loaded, samples: np.ndarray) -> np.ndarray:
    values, mask = features(loaded.processor, [samples], loaded.sample_rate)
    return backend.logits(values, mask)[0]


def stream(audio: Audio, backend, loaded, chunk_s: float = 2.0, left_s: float = 4.0, right_s: float = 1.0,
           realtime: bool = False, offline: bool = True, keep_logits: bool = False, progress=None) -> StreamResult:
    """Stream `audio` through a loaded backend chunk by chunk; per-chunk compute latency and lag, the transcript as it
    grew, and (offline=True) the final transcript scored against the offline transcription of the same file.
    One untimed pass per distinct buffer length comes first: kernel selection, compilation or graph capture for a
    new shape is start-up cost, not streaming latency. `progress(chunk_row)` is called after every chunk."""
    cfg, rate = loaded.model.config, audio.sample_rate
    chunks = plan(len(audio.samples), cfg, rate, chunk_s, left_s, right_s)
    stride, ratio = stride_samples(cfg), frames_per_sample(cfg)
    lengths = sorted({c.buffer[1] - c.buffer[0] for c in chunks})
    for n in lengths:
        _forward(backend, loaded, audio.samples[:n])
    text, rows, kept_all = GrowingText(loaded.processor), [], []
    done, t0 = 0.0, time.perf_counter()
    for c in chunks:
        (b0, b1), (g0, g1) = c.buffer, c.frames
        arrived = b1 / rate                      # the buffer's last sample, right context included, has arrived
        if realtime:
            wait = arrived - (time.perf_counter() - t0)
            if wait > 0:
                time.sleep(wait)
            start = time.perf_counter() - t0
        else:
            start = max(arrived, done)           # one stream: a chunk waits for the previous one too
        t = time.perf_counter()
        out = _forward(backend, loaded, audio.samples[b0:b1])
        lo, hi = frame_span(b0, g0 * stride, g1 * stride, b1, ratio)
        kept = out[lo:min(hi, len(out))]
        if len(kept) != g1 - g0:             # the plan guarantees these frames; fewer means the backend cut some
            raise StreamingError(f"Chunk {c.index}: the backend returned {len(out)} frames for {b1 - b0} samples, "
                                 f"{g1 - g0} expected from frame {lo}.", "Check the backend with python -m core check.")
        now = text.extend(kept.argmax(-1))
        compute = time.perf_counter() - t
        done = (time.perf_counter() - t0) if realtime else start + compute
        row = {"chunk": c.index, "audio_start_s": c.audio[0] / rate, "audio_end_s": c.audio[1] / rate,
               "buffer_start_s": b0 / rate, "buffer_end_s": b1 / rate, "frames": g1 - g0,
               "start_s": start, "available_s": done, "compute_ms": compute * 1e3,
               "lag_s": done - c.audio[1] / rate, "text": now}
        rows.append(row)
        if keep_logits:
            kept_all.append(kept.copy())        # backends may hand back a reused buffer
        if progress:
            progress(row)
    per_chunk, left, right = _rounded(cfg, rate, chunk_s, left_s, right_s)
    result = StreamResult(audio.name, audio.duration, backend.name, per_chunk * stride / rate, left / rate,
                          right / rate, realtime, rows, rows[-1]["text"], warmup_buffers=len(lengths),
                          logits=np.concatenate(kept_all) if keep_logits else None)
    if offline:
        score_against_offline(result, audio, backend, loaded)
    return result


def score_against_offline(result: StreamResult, audio: Audio, backend, loaded) -> None:
    """WER/CER of the streamed transcript against the offline transcription of the same file (jiwer, core.wer)."""
    from .wer import scores
    result.offline_text = transcribe(audio, backend, loaded).text
    try:
        s = scores([result.offline_text], [result.text])
        result.wer, result.cer = s["wer"], s["cer"]
    except ManifestError:   # nothing to score against: said so, not a zero
        result.score_note = "the offline transcript is empty: no WER against it"


def result_row(result: StreamResult, loaded, backend) -> dict:
    """A results-database row (kind "streaming") of one streamed file: latency percentiles as p50_ms/p99_ms, the
    lag, WER/CER against offline, and the chunk timeline (transcripts left out but the last)."""
    from .envinfo import environment
    return {"kind": "streaming", "model": loaded.source, "model_label": loaded.label,
            "random_weights": loaded.random_weights, **backend.row_fields(), "audio": result.audio_name,
            "audio_s": round(result.audio_s, 3), **result.summary(), "wer": result.wer, "cer": result.cer,
            "score_note": result.score_note, "chunk_s": result.chunk_s, "left_s": result.left_s,
            "right_s": result.right_s, "realtime": result.realtime, "warmup_buffers": result.warmup_buffers,
            "text": result.text, "offline_text": result.offline_text,
            "chunk_rows": [{k: v for k, v in c.items() if k != "text"} for c in result.chunks], "env": environment()}


def join_clips(paths, rate: int, gap_s: float = 0.3, name: str | None = None) -> Audio:
    """Audio files joined end to end with `gap_s` of silence between them: one long file for streaming tests."""
    from .audio import load_audio
    gap = np.zeros(int(gap_s * rate), np.float32)
    parts = []
    for p in paths:
        parts += [load_audio(p, rate).samples, gap]
    if not parts:
        raise AudioError("No clips to join.", "Give at least one audio file.")
    return Audio(np.concatenate(parts[:-1]), rate, name or f"{len(paths)} clips joined")


def demo_long(rate: int, seconds: float = 40.0) -> tuple[Audio, str]:
    """Held-out demo clips (data/demo_testset) joined until at least `seconds` long, with their joined references."""
    import soundfile as sf

    from .paths import DEMO_TESTSET
    from .wer import load_manifest
    items, total = [], 0.0
    for path, ref in load_manifest(DEMO_TESTSET):
        items.append((path, ref))
        total += sf.info(str(path)).duration + 0.3
        if total >= seconds:
            break
    audio = join_clips([p for p, _ in items], rate, name=f"{len(items)} demo clips joined")
    return audio, " ".join(r for _, r in items)


__all__ = ["Chunk", "GrowingText", "StreamResult", "StreamingError", "demo_long", "join_clips", "plan", "result_row",
           "stream"]
