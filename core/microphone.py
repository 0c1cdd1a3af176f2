"""Server microphone: this machine's own audio input through sounddevice (PortAudio), for the Transcribe page and
`python -m core record`. Every failure becomes a one-line MicrophoneError with what to do next: no PortAudio
traceback reaches the user. A recording is kept at the device's own rate; core.audio resamples it (soxr)."""
from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio import _quiet_stderr
from .errors import AudioError

BROWSER = ("Record in the browser instead (the Transcribe page's “Record in browser” tab uses the microphone of the "
           "computer you browse from), or upload a file.")
STALL_S = 3.0       # no audio block for this long while recording: the device is gone (PortAudio may not say so) ...
START_S = 6.0       # ... but the first may take a while (a PulseAudio null sink's monitor: ~2 s)
FALLBACK_RATES = (48000, 44100, 16000)   # tried in turn when a device refuses its own default rate

# PortAudio error codes (portaudio.h) that have a message of their own
PA_INVALID_CHANNELS, PA_INVALID_RATE, PA_DEVICE_UNAVAILABLE = -9998, -9997, -9985


class MicrophoneError(AudioError):
    pass


class NoAudioSystemError(MicrophoneError):
    """No sound card and no sound server: a headless server, a container."""


class NoInputDeviceError(MicrophoneError):
    pass


class DeviceBusyError(MicrophoneError):
    pass


class DeviceLostError(MicrophoneError):
    """The device stopped delivering audio mid-recording (unplugged, or its sound server went away)."""


class RateError(MicrophoneError):
    pass


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    hostapi: str
    channels: int
    default_rate: int
    default: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} · {self.default_rate} Hz · {self.hostapi}"


@dataclass
class Take:
    """One recording, filled while it runs (so a caller interrupted mid-way still holds what was recorded)."""
    device: str
    rate: int
    seconds: float                  # the length asked for
    blocks: list = field(default_factory=list)
    frames: int = 0                 # samples in `blocks`, counted as they arrive
    overflows: int = 0              # blocks PortAudio dropped before we got them (a gap in the audio: a busy machine)
    level: float = 0.0              # peak since the previous progress call, 0..1: the level meter
    _peak: float = 0.0              # peak of the blocks since `level` was last set (a meter that samples only the
                                    # latest block misses most of the speech: blocks are shorter than 0.1 s)
    stopped_early: bool = False
    finished: bool = False

    @property
    def elapsed(self) -> float:
        return self.frames / self.rate

    @property
    def meter(self) -> float:
        """The level on a -60..0 dBFS scale as 0..1 (speech sits around -30..-10 dBFS)."""
        return float(np.clip((20 * np.log10(max(self.level, 1e-6)) + 60) / 60, 0, 1))

    @property
    def samples(self) -> np.ndarray:
        if not self.blocks:
            return np.zeros(0, np.float32)
        return np.concatenate(self.blocks)[: int(round(self.seconds * self.rate))]

    def wav_bytes(self) -> bytes:
        import soundfile as sf
        buf = io.BytesIO()
        sf.write(buf, self.samples, self.rate, format="WAV", subtype="PCM_16")
        return buf.getvalue()


_LOCK = threading.Lock()  # one recording per process; PortAudio must not be re-initialised under an open stream
_CLOSING: set[threading.Thread] = set()  # streams of vanished devices still closing: no re-initialising under them
CLOSE_WAIT_S = 2.0  # how long a rescan waits for those before it lists the devices PortAudio already knows


def _sounddevice():
    try:
        with _quiet_stderr():  # ALSA lists every PCM it cannot open on stderr while PortAudio starts
            import sounddevice
    except OSError as err:  # the Python package is there, the PortAudio library is not
        raise NoAudioSystemError(f"PortAudio is not installed ({err}).",
                                 "apt-get install libportaudio2 (bash run.sh does), or: " + BROWSER) from None
    except ImportError:
        raise MicrophoneError("sounddevice is not installed.", "pip install -r requirements.txt, or: " + BROWSER) \
            from None
    return sounddevice


def audio_system() -> str:
    """What sound system this machine has, in words; "" when it has none (a server)."""
    found = []
    try:
        cards = [ln for ln in Path("/proc/asound/cards").read_text().splitlines() if ln[:3].strip().isdigit()]
    except OSError:
        cards = []
    if cards:
        found.append(f"{len(cards)} ALSA sound card{'s' * (len(cards) > 1)}")
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
    server = os.environ.get("PULSE_SERVER", "")
    if (server and Path(server.removeprefix("unix:")).exists()) or (runtime / "pulse" / "native").exists():
        found.append("a PulseAudio server")
    if (runtime / "pipewire-0").exists():
        found.append("a PipeWire server")
    return ", ".join(found)


def input_devices(rescan: bool = False) -> list[InputDevice]:
    """The input devices, default first. Raises NoAudioSystemError / NoInputDeviceError when there are none.
    PortAudio lists devices once, when it starts: `rescan` restarts it to see devices plugged in since."""
    sd = _sounddevice()
    # never while a recording runs, nor while a stream is still closing: Pa_Terminate closes open streams and blocks
    # for good on one whose sound server died (seen in CI after a lost-device recording)
    if rescan and _closes_done(CLOSE_WAIT_S) and _LOCK.acquire(blocking=False):
        try:
            with _quiet_stderr():
                sd._terminate()
                sd._initialize()
        finally:
            _LOCK.release()
    try:
        with _quiet_stderr():
            devices, apis = sd.query_devices(), sd.query_hostapis()
            default = sd.default.device[0]
            if default is None or default < 0:
                default = next((a["default_input_device"] for a in apis if a["default_input_device"] >= 0), -1)
    except sd.PortAudioError as err:
        raise MicrophoneError(f"PortAudio cannot list the audio devices: {err.args[0]}.", BROWSER) from None
    found = [InputDevice(d["index"], d["name"], apis[d["hostapi"]]["name"], d["max_input_channels"],
                         int(d["default_samplerate"]), d["index"] == default)
             for d in devices if d["max_input_channels"] > 0]
    if not found:
        system = audio_system()
        if not system:
            raise NoAudioSystemError("This machine has no audio system (no sound card, no PulseAudio or PipeWire "
                                     "server): a server has no microphone to record from.", BROWSER)
        raise NoInputDeviceError(f"No audio input device found (this machine has {system}).",
                                 "Plug in or enable a microphone, then rescan the devices; or: " + BROWSER)
    return sorted(found, key=lambda d: not d.default)


def find_device(devices: list[InputDevice], wanted: str | int | None) -> InputDevice:
    """`wanted`: None (the default input), a device index, or a name or part of one (case-insensitive)."""
    if wanted is None or wanted == "":
        return devices[0]
    text = str(wanted).strip()
    for match in (lambda d: str(d.index) == text, lambda d: d.name == text,
                  lambda d: text.lower() in d.name.lower()):
        if hits := [d for d in devices if match(d)]:
            return hits[0]
    raise NoInputDeviceError(f"No input device matches {text!r}.",
                             f"Input devices here: {', '.join(d.name for d in devices)} "
                             "(python -m core record --list shows them with their rates).")


def _translate(err: Exception, dev: InputDevice, rate: int) -> MicrophoneError:
    """A PortAudio error at open/start -> the one-line message it means."""
    code = err.args[1] if len(err.args) > 1 and isinstance(err.args[1], int) else None
    text = str(err.args[0] if err.args else err)
    host = " ".join(str(a) for a in err.args[2:]).lower()
    if code == PA_DEVICE_UNAVAILABLE or "busy" in host or "busy" in text.lower():
        return DeviceBusyError(f"{dev.name} is busy: another program is using it.",
                               "Close the program that holds it or pick another device, then record again.")
    if code == PA_INVALID_RATE:
        return RateError(f"{dev.name} cannot be opened at {rate} Hz.", "Pick another input device.")
    return MicrophoneError(f"{dev.name} could not be opened: {text}.",
                           "Rescan the devices or pick another one; or: " + BROWSER)


def _open(sd, dev: InputDevice, rate: int | None, callback, done):
    """An input stream at `rate` (default: the device's own, then the fallbacks), mono where the device allows."""
    rates = [rate] if rate else list(dict.fromkeys([dev.default_rate, *FALLBACK_RATES]))
    refused = []
    for r in rates:
        for channels in dict.fromkeys([1, min(2, dev.channels)]):
            try:
                with _quiet_stderr():
                    stream = sd.InputStream(device=dev.index, samplerate=r, channels=channels, dtype="float32",
                                latency="low", callback=callback, finished_callback=done.set)
                return stream, r
            except sd.PortAudioError as err:
                code = err.args[1] if len(err.args) > 1 else None
                if code == PA_INVALID_RATE:
                    refused.append(r)
                    break
                if code != PA_INVALID_CHANNELS:
                    raise _translate(err, dev, r) from None
    raise RateError(f"{dev.name} cannot be opened at {' or '.join(f'{r} Hz' for r in refused)}.",
                    "Pick another input device (python -m core record --list shows each one's default rate).")


def _close(stream, hung: bool) -> None:
    """Close a stream. One whose device vanished without PortAudio noticing can block in close() for good (seen with
    ALSA's pulse plugin when the server dies while the stream starts): that one is closed from a daemon thread,
    listed in _CLOSING until it returns."""
    def close():
        try:
            stream.close(ignore_errors=True)
        except Exception:  # noqa: BLE001 — a vanished device can fail to close; the stream is gone either way
            pass
        finally:
            _CLOSING.discard(threading.current_thread())
    if hung:
        thread = threading.Thread(target=close, daemon=True, name="close-microphone")
        _CLOSING.add(thread)
        thread.start()
    else:
        close()


def _closes_done(timeout: float) -> bool:
    """Wait up to `timeout` s for the streams still closing; True when none is left."""
    deadline = time.monotonic() + timeout
    for thread in list(_CLOSING):
        thread.join(max(0.0, deadline - time.monotonic()))
    return not _CLOSING


def record(seconds: float, device: str | int | None = None, progress=None, stop=None, rate: int | None = None,
           devices: list[InputDevice] | None = None) -> Take:
    """Record `seconds` of mono audio from `device` (see find_device). `progress(take)` is called about ten times a
    second (take.elapsed; take.level, the peak since the previous call, for a meter); `stop()` returning True, or
    Ctrl-C, ends the recording early and keeps it. Raises MicrophoneError subclasses, never a PortAudio error."""
    sd = _sounddevice()
    dev = find_device(devices or input_devices(), device)
    if not _LOCK.acquire(blocking=False):
        raise DeviceBusyError("The server microphone is already recording (another tab or session of this "
                              "workbench).", "Wait until that recording ends, then record again.")
    try:
        done, last = threading.Event(), [time.monotonic()]
        take: Take | None = None

        def callback(indata, _frames, _time, status):  # PortAudio's thread: keep it short
            mono = indata.mean(axis=1) if indata.shape[1] > 1 else indata[:, 0].copy()
            take.blocks.append(mono)
            take.frames += len(mono)
            take.overflows += bool(status.input_overflow)
            take._peak, last[0] = max(take._peak, float(np.abs(mono).max(initial=0.0))), time.monotonic()
            if take.elapsed >= take.seconds:
                raise sd.CallbackStop

        stream, r = _open(sd, dev, rate, callback, done)
        take, stalled = Take(dev.name, r, float(seconds)), False
        try:
            try:
                stream.start()
            except sd.PortAudioError as err:
                raise _translate(err, dev, r) from None
            last[0] = time.monotonic()
            while not done.wait(0.1):
                take.level, take._peak = take._peak, 0.0
                if progress:
                    progress(take)
                if stop and stop():
                    take.stopped_early = True
                    break
                if time.monotonic() - last[0] > (STALL_S if take.blocks else START_S):
                    stalled = True
                    break
            if not take.stopped_early and take.elapsed < take.seconds:
                raise DeviceLostError(f"{dev.name} stopped delivering audio after {take.elapsed:.1f} s (unplugged, "
                                      "or its sound server stopped); the partial recording is discarded.",
                                      "Check the device, rescan, and record again; or: " + BROWSER)
        except KeyboardInterrupt:  # Ctrl-C in the CLI: end early, keep what was recorded
            take.stopped_early = True
        finally:
            _close(stream, hung=stalled)
        if not take.blocks:
            raise DeviceLostError(f"{dev.name} delivered no audio.", "Check the device and record again; or: "
                                  + BROWSER)
        take.level, take._peak = take._peak, 0.0
        if progress:
            progress(take)
        take.blocks = [take.samples]  # exactly the length asked for: the last block ran past it
        take.frames = len(take.blocks[0])
        take.seconds = take.elapsed
        take.finished = True
        return take
    finally:
        _LOCK.release()
