"""Issue 18 on the lent H200: a TensorRT-RTX engine built on the CPU machine is refused there, first by the
workbench's own check (before TensorRT-RTX sees the bytes), then, bypassing it, by TensorRT-RTX itself.

    python bench/gpu_rtx_refusal.py ENGINE_DIR      # a folder with model.plan + meta.json (python -m core build trtrtx)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.backends import availability, make_backend  # noqa: E402
from core.engine_meta import check_compatible, ensure_compatible, read_engine_meta, runtime_env, trt_module  # noqa: E402
from core.errors import WorkbenchError  # noqa: E402
from core.models import load_model  # noqa: E402


def main(engine_dir: str) -> int:
    folder = Path(engine_dir)
    meta = read_engine_meta(folder)
    env = runtime_env("trtrtx")
    print("environment:", env)
    print("engine:", {k: meta.get(k) for k in ("flavor", "tensorrt", "precision", "targets_cc", "profiles")})
    print("check_compatible:", check_compatible(meta, env))
    print("availability(trtrtx:fp16:cuda):", availability("trtrtx:fp16:cuda"))
    try:
        make_backend("trtrtx:fp16:cuda", load_model("random:wav2vec2-tiny"), engine=str(folder)).load()
        print("make_backend: loaded (unexpected on a 9.0 GPU)")
    except WorkbenchError as err:
        print("make_backend:", type(err).__name__, "|", err.message, "|", err.hint)
    try:
        ensure_compatible(meta, env)
    except WorkbenchError as err:
        print("ensure_compatible:", type(err).__name__, "|", err.message, "|", err.hint)
    trt = trt_module("trtrtx")   # bypassing the workbench: what TensorRT-RTX itself says

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            print(f"[TensorRT-RTX {severity.name}] {msg}")
    engine = trt.Runtime(Logger()).deserialize_cuda_engine((folder / "model.plan").read_bytes())
    print("TensorRT-RTX deserialize_cuda_engine returned:", engine)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
