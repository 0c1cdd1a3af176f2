"""TensorRT for RTX backend (`trtrtx:{precision}:cuda`): an engine built ahead of time by core.tensorrt with
--flavor trtrtx, run through the same code as TensorRT (trt_backend.TrtBackend) on RTX-class GPUs."""
from __future__ import annotations

from pathlib import Path

from ..engine_meta import PRECISIONS
from . import trt_backend

SPECS = [f"trtrtx:{p}:cuda" for p in PRECISIONS]


def available(spec) -> tuple[bool, str]:
    return trt_backend.available(spec, "trtrtx")


def make(spec, loaded, engine: str | Path, meta: dict | None = None, **_build_options):
    return trt_backend.TrtBackend(spec, Path(engine) / "model.plan", meta)
