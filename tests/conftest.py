"""Shared fixtures: a private artifacts folder, the tiny random model, and real synthesised Hindi speech."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Tests never touch the repo's artifacts/ and never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def server_navigation():
    """AppTest puts Streamlit back into its legacy pages-folder mode at every run() (because pages/ exists); a real
    server leaves that mode for good at the first st.navigation call. Model the server: leave it after each
    reset, or every widget interaction would be replayed through the deep-link handover (a rerun) and lost.
    The handover itself is tested in a real browser (test_browser.py)."""
    from streamlit.runtime.pages_manager import PagesManager
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False
    mp = pytest.MonkeyPatch()
    mp.setattr(PagesManager, "__init__", init)
    yield
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def artifacts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    os.environ["WORKBENCH_ARTIFACTS"] = str(root)
    return root


@pytest.fixture(scope="session")
def tiny():
    """wav2vec2-tiny with random weights: the fast model for pipeline tests (its transcripts are noise)."""
    from core.models import load_model
    return load_model("random:wav2vec2-tiny")


@pytest.fixture(scope="session")
def tiny_onnx(tiny):
    from core.pipeline.onnx_build import build_onnx
    return build_onnx(tiny, log=lambda *_: None)


def espeak(text: str, path: Path, voice: str = "hi", speed: int = 150) -> Path:
    if not shutil.which("espeak-ng"):
        pytest.fail("espeak-ng is not installed: `bash run.sh test` installs it (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
    return path


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def hindi_wav(speech_dir) -> Path:
    """Real synthesised Hindi speech, 22.05 kHz mono WAV as espeak-ng writes it."""
    return espeak("नमस्ते, आज मौसम बहुत अच्छा है।", speech_dir / "namaste.wav")
