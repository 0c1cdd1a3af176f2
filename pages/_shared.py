"""What every page shares: the active model (cached per source), available backends, error display.
Pages stay thin: they call `core` and render; nothing here computes results."""
from __future__ import annotations

import importlib
import os
import re
import threading
from contextlib import contextmanager

import streamlit as st

from core.errors import ModelNotFoundError, WorkbenchError

FALLBACK = "random:wav2vec2-tiny"
DEFAULT_ENV = "WORKBENCH_DEFAULT_MODEL"  # e.g. tests pick the tiny model; unset means load_model(None)


@st.cache_resource(show_spinner="Loading model …", max_entries=4)
def _load(source: str | None):
    from core.models import load_model
    return load_model(source)


def load(source: str | None):
    return _load(source)


def _through_app() -> None:
    """Streamlit runs a pages/*.py script directly (its legacy pages-folder mode) when a server's first request is
    a deep link such as /benchmark, so navigation and the sidebar would be missing. Switch that mode off and rerun:
    the rerun goes through app.py's st.navigation, which then opens the same page."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without it has no legacy mode to leave
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def active_model():
    """The LoadedModel every page works on. Default: $WORKBENCH_DEFAULT_MODEL, else load_model(None)
    (reference model, offline: the demo model); if even the demo model is missing, the tiny random model,
    with a warning saying so."""
    _through_app()
    source = st.session_state.get("model_source") or os.environ.get(DEFAULT_ENV) or None
    try:
        loaded = _load(source)
        st.session_state.pop("model_fallback", None)
        return loaded
    except ModelNotFoundError as err:
        if source is not None and source != os.environ.get(DEFAULT_ENV):
            raise
        st.session_state["model_fallback"] = (f"No default model could be loaded ({err.message}) — "
                                              f"using {FALLBACK}: random weights, so transcripts are noise.")
        return _load(FALLBACK)


@st.cache_data(ttl=60, show_spinner=False)
def catalogue() -> list[dict]:
    from core.backends import catalogue as cat
    return cat()


def available_backends() -> list[str]:
    return [b["backend"] for b in catalogue() if b["available"]]


def default_backends(loaded, n: int = 2) -> list[str]:
    """The pre-selected backends: ones that run on `loaded` as it stands, so a first click does not end in "not
    built yet" (an ONNX or engine backend needs its artifact built for this model first)."""
    avail = available_backends()
    preferred = [b for b in ("torch:fp32:cuda", "ort:fp16:cuda", "torch:fp32:cpu", "ort:fp32:cpu")
                 if b in avail and _runs_now(b, loaded)]
    return (preferred or avail)[:n]


def _runs_now(spec: str, loaded) -> bool:
    from core.backends import make_backend
    from core.errors import WorkbenchError
    try:
        make_backend(spec, loaded)   # finds the artifact it needs, loads nothing
    except WorkbenchError:
        return False
    return True


@st.cache_resource(show_spinner=False, max_entries=6)
def _backend(source: str, spec: str, _loaded) -> "_OneAtATime":
    import numpy as np

    from core.backends import make_backend
    be = make_backend(spec, _loaded).load()
    # one throw-away pass: first calls pay for kernel selection and allocator growth, which is not the
    # latency a user of a warm service sees
    be.logits(np.zeros((1, _loaded.sample_rate), np.float32), np.ones((1, _loaded.sample_rate), np.int64))
    return _OneAtATime(be)


class _OneAtATime:
    """A backend cached for every browser session, used by one request at a time: the fast (CUDA-graph) and
    TensorRT backends keep static buffers between prepare and run, and two threads would overwrite each other's."""

    def __init__(self, be):
        self._backend, self._lock = be, threading.Lock()

    def logits(self, *args, **kwargs):
        with self._lock:
            return self._backend.logits(*args, **kwargs)

    def __getattr__(self, name):   # name, spec, precision, …: read-only attributes
        return getattr(self._backend, name)


def backend(loaded, spec: str):
    """A loaded backend, kept between reruns and shared by sessions, one logits call at a time."""
    return _backend(loaded.source, spec, loaded)


def optional(module: str):
    """An optional core module (precision variants, TensorRT, Triton, …), or None when not in this build."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and module.startswith(err.name):
            return None
        raise


def show_error(err: Exception) -> None:
    from core.paths import STORAGE_ERRNOS, storage_error
    if isinstance(err, OSError) and err.errno in STORAGE_ERRNOS:  # a full or read-only artifacts folder
        err = storage_error(err, err.filename or "the artifacts folder")
    if isinstance(err, WorkbenchError):
        st.error(f"**{err.message}**" + (f"\n\n→ {err.hint}" if err.hint else ""), icon=":material/error:")
    else:
        st.error(f"**{type(err).__name__}: {err}**\n\n→ This is a bug in the workbench; the details are below.",
                 icon=":material/bug_report:")
        st.exception(err)


@contextmanager
def guarded():
    """Show any failure of the block as st.error (message + what to do) instead of a crashed page."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 — every error becomes a readable message on the page
        show_error(err)


def model_badge(loaded) -> None:
    if loaded.random_weights:
        st.caption(f":orange-badge[:material/casino: random weights] {loaded.label}")
    elif loaded.kind == "demo":
        st.caption(f":blue-badge[:material/science: synthetic-speech demo model] {loaded.label}")
    else:
        st.caption(f":green-badge[:material/check: {loaded.kind}] {loaded.label}")


SAVED_RUN = re.compile(r"saved as run (\d+)")


def follow_job(job_key: str, run_keys: tuple[str, ...], what: str) -> None:
    """Show the background job named in st.session_state[job_key] (a `python -m core` command that ends by
    printing "saved as run N"): progress and Cancel while it runs; when done, put N into every key of `run_keys`
    and rerun the page so its run view opens on it; otherwise the job's own last error line. Call it from a
    fragment that reruns every second."""
    from core import jobs
    jid = st.session_state.get(job_key)
    job = jobs.get(jid) if jid else None
    if job is None:
        return
    state, (fraction, message) = job.state(), job.progress()
    if state.get("status") in jobs.ACTIVE:
        st.progress(fraction or 0.0, text=("queued: another job is running …" if state["status"] == "queued"
                                           else message[-140:] or "starting …"))
        if st.button(f"Cancel {what}", icon=":material/stop:"):
            job.cancel()
        return
    saved = SAVED_RUN.findall(job.log())
    if state.get("status") == "done" and saved:
        st.success(f"{what.capitalize()} done — saved as run {saved[-1]}", icon=":material/check_circle:")
        if st.session_state.get(run_keys[0]) != int(saved[-1]):
            for key in run_keys:
                st.session_state[key] = int(saved[-1])
            st.rerun()  # the whole page: its run view opens on the new run
    else:
        lines = job.log(4000).strip().splitlines() or ["no output"]
        said = [ln for ln in lines if ln.startswith("error:")] or lines[-1:]
        st.error(f"The {what} {state.get('status')}: {said[-1].removeprefix('error: ')}", icon=":material/error:")
