"""Speech synthesis for the demo model: espeak-ng Hindi voices -> 16 kHz mono float32, light noise and gain.

The espeak-ng program is ``$ESPEAK_NG`` if set (a wrapper made by ``gpu_setup.sh`` on a bare GPU box), else
``espeak-ng`` on the PATH. Needs numpy and soxr; no soundfile (WAV is read and written with the stdlib).

Voice settings are split so that the held-out test set uses a voice variant and a speed band that
training never sees: ``HELDOUT_VARIANTS`` and ``HELDOUT_SPEED``.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import wave
from dataclasses import asdict, dataclass
from multiprocessing import get_context

import numpy as np

SAMPLE_RATE = 16000

# espeak-ng voice variants (espeak-ng-data/voices/!v); "" is the plain Hindi voice.
TRAIN_VARIANTS = ["", "m1", "m2", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f5",
                  "Andy", "Annie", "aunty", "boris", "david", "linda", "max", "steph", "iven", "paul"]
HELDOUT_VARIANTS = ["m3", "f4"]
TRAIN_SPEEDS = (110, 200)       # words per minute, uniform ...
HELDOUT_SPEED = (155, 165)      # ... except this band, which only the held-out test set uses
TRAIN_PITCH = (25, 80)
HELDOUT_PITCH = (35, 65)


@dataclass
class Voice:
    variant: str = ""
    speed: int = 150          # espeak-ng -s (words per minute)
    pitch: int = 50           # espeak-ng -p (0-99)
    gap: int = 0              # espeak-ng -g (pause between words, 10 ms units)
    stretch: float = 1.0      # resampling factor: >1 shorter and higher, <1 longer and lower
    snr_db: float = 40.0      # white noise (low-passed at random) at this SNR
    gain_db: float = 0.0
    pad_s: float = 0.15       # silence kept around the speech after trimming
    seed: int = 0

    @property
    def voice_name(self) -> str:
        return "hi" + (f"+{self.variant}" if self.variant else "")


def train_voice(rng: random.Random) -> Voice:
    while True:
        speed = rng.randint(*TRAIN_SPEEDS)
        if not HELDOUT_SPEED[0] <= speed <= HELDOUT_SPEED[1]:
            break
    return Voice(variant=rng.choice(TRAIN_VARIANTS), speed=speed, pitch=rng.randint(*TRAIN_PITCH),
                 gap=rng.choice([0, 0, 0, 1, 2]), stretch=rng.uniform(0.93, 1.07), snr_db=rng.uniform(15, 45),
                 gain_db=rng.uniform(-12, 3), pad_s=rng.uniform(0.05, 0.3), seed=rng.randrange(2**31))


def heldout_voice(rng: random.Random, variant: str) -> Voice:
    return Voice(variant=variant, speed=rng.randint(*HELDOUT_SPEED), pitch=rng.randint(*HELDOUT_PITCH),
                 gap=0, stretch=1.0, snr_db=rng.uniform(30, 40), gain_db=rng.uniform(-6, 0), pad_s=0.1,
                 seed=rng.randrange(2**31))


def espeak_program() -> str:
    prog = os.environ.get("ESPEAK_NG") or shutil.which("espeak-ng")
    if not prog:
        raise RuntimeError("espeak-ng not found: install it (apt-get install espeak-ng) or set ESPEAK_NG")
    return prog


def read_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """PCM16 mono WAV bytes -> float32 [-1, 1], sample rate. Tolerates espeak's streamed header sizes."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    pos, rate, channels = 12, None, 1
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"fmt ":
            channels = int.from_bytes(data[pos + 10:pos + 12], "little")
            rate = int.from_bytes(data[pos + 12:pos + 16], "little")
            bits = int.from_bytes(data[pos + 22:pos + 24], "little")
            if bits != 16:
                raise ValueError(f"expected PCM16, got {bits} bits")
        elif cid == b"data":
            raw = data[pos + 8:]
            raw = raw[: min(size, len(raw)) // (2 * channels) * 2 * channels]
            x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
            if channels > 1:
                x = x.reshape(-1, channels).mean(axis=1)
            return x, rate
        pos += 8 + size + (size & 1)
    raise ValueError("WAV stream has no data chunk")


def read_wav(path) -> tuple[np.ndarray, int]:
    with open(path, "rb") as f:
        return read_wav_bytes(f.read())


def write_wav(path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def espeak(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    cmd = [espeak_program(), "-v", voice.voice_name, "-s", str(voice.speed), "-p", str(voice.pitch),
           "-g", str(voice.gap), "--stdout", text]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout
    return read_wav_bytes(out)


def _trim(x: np.ndarray, rate: int, pad_s: float) -> np.ndarray:
    if not len(x):
        return x
    thr = 0.02 * float(np.abs(x).max() or 1.0)
    idx = np.flatnonzero(np.abs(x) > thr)
    if not len(idx):
        return x
    pad = int(pad_s * rate)
    return x[max(0, idx[0] - pad): idx[-1] + pad + 1]


def render(text: str, voice: Voice) -> np.ndarray:
    """Synthesise ``text`` with ``voice``: 16 kHz mono float32 with the voice's stretch, noise and gain."""
    import soxr
    x, rate = espeak(text, voice)
    x = _trim(x, rate, voice.pad_s)
    # Treating the signal as if recorded at rate*stretch and resampling to 16 kHz shortens it by 1/stretch
    # and scales its spectrum by stretch (a cheap vocal-tract / tempo perturbation).
    x = soxr.resample(x, rate * voice.stretch, SAMPLE_RATE, quality="HQ").astype(np.float32)
    rng = np.random.default_rng(voice.seed)
    peak = float(np.abs(x).max() or 1.0)
    x = x * (0.7 / peak)
    rms = float(np.sqrt(np.mean(x**2)) or 1e-3)
    noise = rng.standard_normal(len(x)).astype(np.float32)
    if rng.random() < 0.6:  # first-order low-pass at a random corner: white to darker noise
        spec = np.fft.rfft(noise)
        f = np.fft.rfftfreq(len(noise), 1.0 / SAMPLE_RATE)
        noise = np.fft.irfft(spec / np.sqrt(1.0 + (f / rng.uniform(300, 4000)) ** 2), n=len(noise)).astype(np.float32)
    noise *= rms / (float(np.sqrt(np.mean(noise**2))) or 1.0) * 10 ** (-voice.snr_db / 20)
    x = (x + noise) * 10 ** (voice.gain_db / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _render_job(job):
    idx, text, voice = job
    try:
        return idx, render(text, Voice(**voice))
    except Exception as err:  # a failed clip is dropped, not fatal
        return idx, repr(err)


def render_many(items: list[tuple[str, Voice]], workers: int | None = None, log=print) -> list[np.ndarray | None]:
    """Render (text, voice) pairs in parallel processes; a clip that failed is None."""
    workers = workers or max(1, (os.cpu_count() or 2))
    jobs = [(i, t, asdict(v)) for i, (t, v) in enumerate(items)]
    out: list = [None] * len(jobs)
    failed = 0
    with get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
        for n, (i, res) in enumerate(pool.imap_unordered(_render_job, jobs, chunksize=16), 1):
            if isinstance(res, str):
                failed += 1
                if failed <= 3:
                    log(f"  clip {i} failed: {res}")
            else:
                out[i] = res
            if n % 2000 == 0:
                log(f"  synthesised {n}/{len(jobs)}")
    if failed:
        log(f"  {failed} clips failed and were dropped")
    return out
