"""Audio in: decode WAV/FLAC/OGG/MP3 from a path or bytes, down-mix, resample, and window long files."""
from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AudioError

SUPPORTED = ("wav", "flac", "ogg", "mp3")
MAX_SECONDS = 3 * 3600       # longer input is refused rather than silently truncated
MAX_BYTES = 1 << 30          # 1 GiB


@dataclass
class Audio:
    samples: np.ndarray      # float32, mono, at `sample_rate`
    sample_rate: int
    name: str = "audio"
    original_rate: int = 0
    original_channels: int = 1
    warning: str = ""        # decoded, but something is off (a file that ends before its header says)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples.astype(np.float32, copy=False)
    import soxr
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


@contextlib.contextmanager
def _quiet_stderr():
    """libsndfile's MP3 decoder (mpg123) prints its complaints to the process's stderr: keep them out of the
    user's terminal (the error it leads to is reported properly)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decode_error(err: Exception, name: str) -> str:
    text = re.sub(r"<_io\.\w+ object at 0x[0-9a-f]+>", name, str(err))
    if "not a regular file" in text or "Format not recognised" in text or "unknown format" in text.lower():
        return f"Cannot decode {name}: not a WAV, FLAC, OGG or MP3 stream"
    return f"Cannot decode {name}: {text}"


def load_audio(source, target_rate: int = 16000, name: str | None = None) -> Audio:
    """Decode `source` (a path, bytes or a binary file object) to mono float32 at `target_rate`."""
    import soundfile as sf
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        if path.is_dir():
            raise AudioError(f"{path} is a folder, not an audio file.", "Give the path of a WAV/FLAC/OGG/MP3 file.")
        if not path.is_file():
            raise AudioError(f"Audio file not found: {path}", "Check the path.")
        size = path.stat().st_size
        data = path
    else:
        raw = source if isinstance(source, (bytes, bytearray)) else source.read()
        name = name or getattr(source, "name", "audio")
        size = len(raw)
        data = io.BytesIO(raw)
    if size == 0:
        raise AudioError(f"{name} is empty (0 bytes).", "Upload or record a non-empty audio file.")
    if size > MAX_BYTES:
        raise AudioError(f"{name} is {size / 2**20:.0f} MiB, over the {MAX_BYTES >> 20} MiB limit.",
                         "Split the recording into shorter files.")
    try:
        with _quiet_stderr():
            info = sf.info(data)
            if info.duration > MAX_SECONDS:
                raise AudioError(f"{name} lasts {info.duration / 60:.0f} min, over the {MAX_SECONDS // 60} min "
                                 "limit.", "Split the recording into shorter files.")
            if hasattr(data, "seek"):
                data.seek(0)
            samples, rate = sf.read(data, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as err:  # libsndfile reports corrupt and unknown formats the same way
        raise AudioError(_decode_error(err, name) + ".",
                         f"Supported formats: {', '.join(s.upper() for s in SUPPORTED)}. "
                         "Check that the file is not truncated or corrupt.") from err
    warning = ""
    # libsndfile decodes what is there and notes the header's claim: "data : 32000 (should be 15978)"
    short = re.search(r"data\s*:\s*(\d+) \(should be (\d+)\)", info.extra_info or "")
    if short and int(short.group(2)) < int(short.group(1)):
        declared = int(short.group(1)) / max(int(short.group(2)), 1) * samples.shape[0] / rate
        warning = (f"{name} ends early: its header announces {declared:.2f} s, the file holds "
                   f"{samples.shape[0] / rate:.2f} s (a truncated file?)")
    if samples.shape[0] == 0:
        raise AudioError(f"{name} contains no audio samples.", "Upload or record a non-empty audio file.")
    channels = samples.shape[1]
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"{name} contains NaN or infinite samples.", "Re-export the audio.")
    return Audio(resample(mono, rate, target_rate), target_rate, name, rate, channels, warning)


def windows(n_samples: int, rate: int, window_s: float = 20.0, overlap_s: float = 2.0):
    """Overlapping (start, end) sample ranges covering [0, n_samples); each window overlaps the
    previous one by `overlap_s`, so a 10-minute file is transcribed in bounded memory."""
    win, hop = int(window_s * rate), int((window_s - overlap_s) * rate)
    if hop <= 0:
        raise ValueError("overlap must be shorter than the window")
    if n_samples <= win:
        return [(0, n_samples)]
    starts = list(range(0, n_samples - win, hop)) + [max(n_samples - win, 0)]
    return [(s, min(s + win, n_samples)) for s in starts]
