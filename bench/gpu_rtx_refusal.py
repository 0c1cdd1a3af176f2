"""Issue 18 on the lent H200: a TensorRT-RTX engine built on the CPU machine is refused there, first by the
workbench's own check (before TensorRT-RTX sees the bytes), then, bypassing it, by TensorRT-RTX itself; the same
for ONNX Runtime's TensorRT-RTX EP plugin (ort:fp16:trtrtx), when onnxruntime_ep_nv_tensorrt_rtx is installed.

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
    ep_plugin()
    return 0


def ep_plugin() -> None:
    import numpy as np
    import onnxruntime as ort
    from core.backends.ort_backend import rtx_ep_devices
    from core.pipeline.onnx_build import build_variant
    print("onnxruntime", ort.__version__)
    print("availability(ort:fp16:trtrtx):", availability("ort:fp16:trtrtx"))
    import onnxruntime_ep_nv_tensorrt_rtx as plugin
    devices = rtx_ep_devices()[0]
    print("registered EP libraries' devices:", sorted({d.ep_name for d in ort.get_ep_devices()}))
    print("EP devices:", [(d.ep_name, str(d.device.type), d.device.vendor_id, d.device.device_id,
                           dict(d.device.metadata)) for d in devices])
    if not devices:   # bypassing: ask for the EP by name anyway
        try:
            session = ort.InferenceSession(str(build_variant(load_model("random:wav2vec2-tiny"), "fp16",
                                                             log=lambda *_: None).path),
                                           providers=[plugin.get_ep_name(), "CPUExecutionProvider"])
            print("by name: session providers", session.get_providers())
        except Exception as err:  # noqa: BLE001
            print("by name: raised", type(err).__name__, str(err)[:400])
        return
    loaded = load_model("random:wav2vec2-tiny")
    try:
        make_backend("ort:fp16:trtrtx", loaded).load()
        print("make_backend(ort:fp16:trtrtx): loaded")
    except WorkbenchError as err:
        print("make_backend(ort:fp16:trtrtx):", type(err).__name__, "|", err.message, "|", err.hint)
    art = build_variant(loaded, "fp16", log=lambda *_: None)   # bypassing the workbench's check
    opts = ort.SessionOptions()
    opts.add_provider_for_devices(devices, {})
    try:
        session = ort.InferenceSession(str(art.path), opts)
        print("EP session providers:", session.get_providers())
        x = np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32)
        out = session.run(None, {i.name: (x if i.name == "input_values" else np.ones(x.shape, np.int64))
                                 for i in session.get_inputs()})
        print("EP run: logits", out[0].shape, "finite", bool(np.isfinite(out[0]).all()))
    except Exception as err:  # noqa: BLE001 — what the EP itself says is the finding
        print("EP session/run raised:", type(err).__name__, str(err)[:600])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
