"""Backend registry: one place that turns a spec string into a ready backend, or says why it can't.

Each runtime lives in its own module exposing SPECS (the specs it offers, in UI order),
available(spec) -> (ok, why) and make(spec, loaded, **options) -> Backend (not yet loaded)."""
from __future__ import annotations

import importlib

from ..errors import BackendUnavailableError
from .base import PRECISIONS, Backend, BackendSpec

RUNTIMES = {  # runtime name -> module
    "torch": ".torch_backend",
    "ort": ".ort_backend",
    "trt": ".trt_backend",
    "trtrtx": ".trtrtx_backend",
    "triton": ".triton_backend",
    "fast": ".fast_backend",
}


def _module(runtime: str):
    """The runtime's module, or None when this version of the workbench does not have it."""
    if runtime not in RUNTIMES:
        return None
    try:
        return importlib.import_module(RUNTIMES[runtime], __name__)
    except ModuleNotFoundError as err:
        if err.name == __name__ + RUNTIMES[runtime]:
            return None
        raise


def availability(spec: str | BackendSpec) -> tuple[bool, str]:
    """(usable here, why not) without loading any model."""
    spec = BackendSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.precision not in PRECISIONS:
        return False, f"unknown precision '{spec.precision}' (known: {', '.join(PRECISIONS)})"
    mod = _module(spec.runtime)
    if mod is None:
        return False, f"unknown runtime '{spec.runtime}' (known: {', '.join(RUNTIMES)})"
    return mod.available(spec)


def make_backend(spec: str | BackendSpec, loaded, **options) -> Backend:
    """A backend for `loaded` (core.models.LoadedModel), not yet loaded, on the artifact (ONNX file, engine) its
    spec needs. Never builds: a missing or rejected artifact raises NotBuiltError saying how to build it."""
    spec = BackendSpec.parse(spec) if isinstance(spec, str) else spec
    ok, why = availability(spec)
    if not ok:
        head, _, hint = why.partition(": ")
        raise BackendUnavailableError(f"Backend {spec} is not available: {head}.", hint or "Pick another backend.")
    given = dict(options)
    if spec.runtime in ("trt", "trtrtx") and options.get("engine") is None:
        options = _built_engine(spec, loaded, **options)
    try:
        backend = _module(spec.runtime).make(spec, loaded, **options)
    except TypeError as err:   # an option this backend does not take
        if "argument" not in str(err):
            raise
        raise BackendUnavailableError(f"Backend {spec} was given an option it does not take: {err}.",
                                      "Check the option's name against the backend's documentation.") from None
    backend.options = given
    return backend


def _built_engine(spec, loaded, **_build_options) -> dict:
    """trt's options naming the engine of this precision (default settings) built for `loaded`, this TensorRT and
    this GPU's compute capability. Never builds: a missing engine says how to build it."""
    from ..engine_meta import TrtEngine
    art = TrtEngine(loaded, spec.precision, flavor=spec.runtime).require(
        f"python -m core trt-build --flavor {spec.runtime} --precision {spec.precision} --model {loaded.source}")
    return {"engine": str(art.dir), "meta": art.meta}


def parse_option(text: str) -> tuple[str, object]:
    """A backend option given as text, KEY=VALUE -> (key, value), the value read as JSON where it parses
    (true, 2, [1, 2]) and kept as text otherwise (compile=precompile). ValueError names what was expected."""
    import json
    key, sep, value = text.partition("=")
    if not (sep and key.isidentifier()):
        raise ValueError(f"expected KEY=VALUE (e.g. compile=precompile), got '{text}'")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def option_argument(text: str) -> tuple[str, object]:
    """parse_option as an argparse type (`check --option`, `serve --option`, core.triton.serve --backend-option)."""
    import argparse
    try:
        return parse_option(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def known() -> list[str]:
    return [s for r in RUNTIMES if (m := _module(r)) is not None for s in getattr(m, "SPECS", [])]


def catalogue() -> list[dict]:
    """Every known backend with whether it runs here, for `info` and the dashboard."""
    return [{"backend": s, "available": ok, "why": why} for s in known() for ok, why in [availability(s)]]


__all__ = ["Backend", "BackendSpec", "availability", "catalogue", "known", "make_backend"]
