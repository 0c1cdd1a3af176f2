"""Audio -> text on any backend: processor normalisation, windowing for long audio, CTC decoding."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .audio import Audio, windows
from .errors import AudioError, BackendUnavailableError


@dataclass
class Transcript:
    text: str
    backend: str
    audio_seconds: float
    latency_ms: float      # wall time of the whole transcription, decoding included
    windows: int


def features(processor, batch: list[np.ndarray], rate: int):
    """Processor normalisation + padding: (input_values float32 [B,T], attention_mask int64 [B,T])."""
    out = processor.feature_extractor(batch, sampling_rate=rate, padding=True, return_tensors="np",
                                      return_attention_mask=True)
    return out["input_values"].astype(np.float32), out["attention_mask"].astype(np.int64)


def decode(processor, logits: np.ndarray, beam: bool = False) -> list[str]:
    """Greedy CTC through the model's own tokenizer; beam search with its KenLM model when it ships one."""
    if beam:
        if not hasattr(processor, "decoder"):
            raise BackendUnavailableError(
                "Beam search needs a model that ships a KenLM language model (Wav2Vec2ProcessorWithLM).",
                "Use greedy decoding, or a model with a language_model/ folder and `pip install pyctcdecode kenlm`.")
        return list(processor.batch_decode(logits).text)
    return decode_ids(processor, logits.argmax(-1))


def decode_ids(processor, ids: np.ndarray) -> list[str]:
    """Greedy CTC text of frame-wise token ids [B, frames] (repeats merged, blanks dropped) by the model's tokenizer."""
    tokenizer = getattr(processor, "tokenizer", processor)
    return tokenizer.batch_decode(ids)


def min_samples(model_config) -> int:
    """The fewest samples the feature encoder turns into one frame (400 for wav2vec2: 25 ms at 16 kHz)."""
    n = 1
    for kernel, stride in reversed(list(zip(model_config.conv_kernel, model_config.conv_stride))):
        n = (n - 1) * stride + kernel
    return n


def frames_per_sample(model_config) -> float:
    return 1.0 / float(np.prod(model_config.conv_stride))


def frame_lengths(model_config, attention_mask: np.ndarray) -> list[int]:
    """Logit frames that belong to real audio for each row of a padded batch (conv arithmetic)."""
    return [int(n) for n in conv_frames(model_config, attention_mask.sum(-1))]


def conv_frames(model_config, samples):
    """Logit frames the feature encoder makes of `samples` samples (an int or an array of them)."""
    lengths = np.asarray(samples).astype(np.int64)
    for kernel, stride in zip(model_config.conv_kernel, model_config.conv_stride):
        lengths = (lengths - kernel) // stride + 1
    return lengths


def frame_span(start: int, keep_from: int, keep_to: int, end: int, ratio: float) -> tuple[int, int]:
    """Frames [lo, hi) of a window over samples [start, end) that hold the samples [keep_from, keep_to) it answers
    for: sample offsets times frames per sample, rounded, and no further than the window's whole frames."""
    lo, hi = int(round((keep_from - start) * ratio)), int(round((keep_to - start) * ratio))
    return lo, min(hi, int(np.floor((end - start) * ratio)))


def real_frames(model_config, logits: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
    """Each row's logits cut to the frames of its real audio (a padded batch's tail frames dropped)."""
    return [logits[i, :n] for i, n in enumerate(frame_lengths(model_config, attention_mask))]


def transcribe_batch(items: list[np.ndarray], backend, loaded) -> list[str]:
    """Audio arrays (at the model's rate, at most one window long) -> greedy text, one padded batch."""
    values, mask = features(loaded.processor, items, loaded.sample_rate)
    rows = real_frames(loaded.model.config, backend.logits(values, mask), mask)
    return [decode(loaded.processor, r[None])[0] for r in rows]


def logits_long(backend, processor, samples: np.ndarray, rate: int, ratio: float,
                window_s: float = 20.0, overlap_s: float = 2.0, batch_size: int = 4) -> tuple[np.ndarray, int]:
    """Logits of arbitrarily long audio: overlapping windows, each keeping the frames nearest its centre."""
    spans = windows(len(samples), rate, window_s, overlap_s)
    half = int(overlap_s * rate / 2)
    parts = []
    for i in range(0, len(spans), batch_size):
        chunk = spans[i:i + batch_size]
        values, mask = features(processor, [samples[s:e] for s, e in chunk], rate)
        out = backend.logits(values, mask)
        for j, (s, e) in enumerate(chunk):
            k = i + j
            keep_from = 0 if k == 0 else s + half           # sample offsets this window is responsible for
            keep_to = e if k == len(spans) - 1 else spans[k + 1][0] + half
            lo, hi = frame_span(s, keep_from, keep_to, e, ratio)
            parts.append(out[j, lo:min(hi, out.shape[1])])
    return np.concatenate(parts, axis=0), len(spans)


def transcribe(audio: Audio, backend, loaded, beam: bool = False, window_s: float = 20.0,
               overlap_s: float = 2.0) -> Transcript:
    """Transcribe one decoded Audio with a loaded backend."""
    start = time.perf_counter()
    shortest = min_samples(loaded.model.config)
    if len(audio.samples) < shortest:
        raise AudioError(f"{audio.name} is {audio.duration * 1e3:.0f} ms long; the model needs at least "
                         f"{shortest / audio.sample_rate * 1e3:.0f} ms of audio for one output frame.",
                         "Record or upload a longer clip.")
    ratio = frames_per_sample(loaded.model.config)
    logits, n = logits_long(backend, loaded.processor, audio.samples, audio.sample_rate, ratio, window_s, overlap_s)
    text = decode(loaded.processor, logits[None], beam)[0]
    return Transcript(text, backend.name, audio.duration, (time.perf_counter() - start) * 1e3, n)
