"""Audio decoding: formats, bytes, down-mixing, resampling, windows, and the errors users see."""
import numpy as np
import pytest
import soundfile as sf

from core.audio import load_audio, windows
from core.errors import AudioError


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_formats_decode_to_16k_mono(hindi_wav, tmp_path, fmt, subtype):
    speech, rate = sf.read(hindi_wav, dtype="float32")
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, speech, rate, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.sample_rate == 16000 and audio.original_rate == rate == 22050
    assert audio.samples.ndim == 1 and audio.samples.dtype == np.float32
    assert abs(audio.duration - len(speech) / rate) < 0.1  # MP3 adds encoder padding
    assert np.abs(audio.samples).max() > 0.05             # real speech came through, not silence


def test_bytes_and_stereo_downmix(tmp_path):
    t = np.arange(44100) / 44100
    left, right = np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], 1).astype(np.float32), 44100)
    audio = load_audio(path.read_bytes(), name="stereo.flac")
    assert audio.original_channels == 2 and audio.original_rate == 44100
    assert len(audio.samples) == 16000
    # the mean of the channels, resampled: amplitude 0.75 of a 440 Hz sine
    assert abs(np.abs(audio.samples[1000:-1000]).max() - 0.75) < 0.01
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert abs(np.argmax(spectrum) * 16000 / len(audio.samples) - 440) < 2


def test_resampler_is_band_limited():
    """A real resampler removes content above the new Nyquist instead of aliasing it."""
    from core.audio import resample
    t = np.arange(48000) / 48000
    tone = np.sin(2 * np.pi * 12000 * t).astype(np.float32)  # above 8 kHz: must vanish at 16 kHz
    assert np.abs(resample(tone, 48000, 16000)[500:-500]).max() < 0.01


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(path)


def test_zero_samples(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros((0,), np.float32), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(path)


def test_corrupt_and_unsupported(hindi_wav, tmp_path):
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(hindi_wav.read_bytes()[:30])
    with pytest.raises(AudioError, match="Cannot decode") as err:
        load_audio(truncated)
    assert "WAV, FLAC, OGG, MP3" in err.value.hint
    text = tmp_path / "notes.m4a"
    text.write_bytes(b"this is not audio at all" * 20)
    with pytest.raises(AudioError, match="Cannot decode"):
        load_audio(text)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_huge_file_refused(tmp_path, monkeypatch):
    import core.audio
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 5, np.float32) + 0.1, 16000)
    monkeypatch.setattr(core.audio, "MAX_SECONDS", 3)  # the limit itself, not the decoder, is under test
    with pytest.raises(AudioError, match="over the"):
        load_audio(path)


def test_windows_cover_and_overlap():
    rate = 16000
    spans = windows(rate * 65, rate, window_s=20, overlap_s=2)
    assert spans[0][0] == 0 and spans[-1][1] == rate * 65
    assert all(e - s == 20 * rate for s, e in spans)
    assert all(a[1] - b[0] >= 2 * rate for a, b in zip(spans, spans[1:]))  # consecutive windows overlap
    assert windows(rate * 3, rate) == [(0, rate * 3)]


def test_odd_inputs_get_one_clear_message(tmp_path, capfd, hindi_wav):
    import io
    folder = tmp_path / "a_folder"
    folder.mkdir()
    with pytest.raises(AudioError, match="is a folder, not an audio file"):
        load_audio(folder)
    noise = tmp_path / "noise.mp3"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    capfd.readouterr()
    with pytest.raises(AudioError, match="Cannot decode noise.mp3: not a WAV, FLAC, OGG or MP3 stream"):
        load_audio(noise)
    assert capfd.readouterr().err == ""           # the MP3 decoder's own chatter stays out of the terminal
    with pytest.raises(AudioError) as err:
        load_audio(io.BytesIO(b"not audio" * 100), name="upload.wav")
    assert "upload.wav" in err.value.message and "BytesIO" not in err.value.message


def test_truncated_wav_decodes_with_a_warning(hindi_wav, tmp_path):
    data = hindi_wav.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    audio = load_audio(cut)
    assert "ends early" in audio.warning and "truncated" in audio.warning
    assert load_audio(hindi_wav).warning == ""


def test_a_clip_too_short_for_one_frame_is_refused(tiny):
    from core.audio import Audio
    from core.backends import make_backend
    from core.transcribe import transcribe
    with make_backend("torch:fp32:cpu", tiny) as backend:
        with pytest.raises(AudioError, match="is 10 ms long; the model needs at least 25 ms"):
            transcribe(Audio(np.full(160, 0.1, np.float32), 16000, "click.wav"), backend, tiny)
