"""Serving through Triton's own Python backend instead of PyTriton: a model repository whose model.py
(core/triton/python_model.py) runs the workbench backend, served by the tritonserver binary that PyTriton bundles.
Triton starts each instance of the instance_group as its own process on its own GPU, so instances do not share one
interpreter (PyTriton calls every instance in the serving process). Used by `core.triton.serve --python-backend`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHM_BYTES = 16 << 20   # the stub <-> server shared memory per instance, grown by Triton as batches need


def write_repository(root: Path, loaded, backend: str, model_name: str, opts, warmup_seconds: float | None,
                     backend_options: dict | None = None, audio_dtype: str = "FP32") -> Path:
    """<root>/<model_name>/{config.pbtxt, 1/model.py}; the config is a ModelConfig protobuf, parsed back.
    backend_options travel as one JSON parameter, the backend's keyword options in each instance."""
    import json
    from .repo import config_text, model_config, parse_config
    cfg = model_config(model_name, "python", int(loaded.model.config.vocab_size), loaded.uses_attention_mask,
                       backend.split(":")[1], opts, audio_dtype)
    for key, value in {"model": loaded.source, "backend": backend, "warmup_seconds": f"{warmup_seconds or 0:g}",
                       "backend_options": json.dumps(backend_options or {})}.items():
        cfg.parameters[key].string_value = value
    text = config_text(cfg)
    parse_config(text)
    version = root / model_name / "1"
    version.mkdir(parents=True)
    shutil.copy2(Path(__file__).with_name("python_model.py"), version / "model.py")
    (root / model_name / "config.pbtxt").write_text(text, encoding="utf-8")
    return root


def server_files(work: Path) -> tuple[Path, Path, Path]:
    """(tritonserver binary, backends folder with this Python's stub, PyTriton's server libraries), the way PyTriton
    lays them out for itself."""
    from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path
    dist = get_root_module_path() / "tritonserver"
    backends = work / "backends"
    shutil.copytree(dist / "backends", backends)
    stub = get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}")
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    return dist / "bin" / "tritonserver", backends, Path(get_libs_path())


def libpython_env(env: dict | None = None) -> dict:
    """Environment whose LD_LIBRARY_PATH starts with this interpreter's LIBDIR: Triton's Python-backend
    stub must load the same libpython as the running interpreter (pyenv builds otherwise pick up the
    system's older libpython and the model fails to load with 'No module named numpy')."""
    env = dict(os.environ if env is None else env)
    libdir = sysconfig.get_config_var("LIBDIR")
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and (not parts or parts[0] != libdir):
        env["LD_LIBRARY_PATH"] = ":".join([libdir] + [p for p in parts if p != libdir])
    return env


def server_env() -> dict:
    """The stubs load this interpreter's libpython (LD_LIBRARY_PATH) and import the workbench and its packages
    through PYTHONPATH: this process's own sys.path, in order (numpy<2 first where a venv puts it first)."""
    env = libpython_env()
    paths = [str(ROOT)] + [p for p in sys.path if p and Path(p).is_dir()]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def ready(http: str, model_name: str | None = None, timeout_s: float = 2.0) -> bool:
    """Whether the Triton server at `http` (host:port) is ready, and `model_name` too when given."""
    import tritonclient.http as httpclient
    try:
        client = httpclient.InferenceServerClient(http, connection_timeout=timeout_s, network_timeout=timeout_s)
        try:
            return bool(client.is_server_ready() and (model_name is None or client.is_model_ready(model_name)))
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - refused, reset, timeout: not ready yet
        return False


def serve(args, loaded, opts, backend_options: dict) -> int:
    """Write the repository into a temporary folder, run tritonserver on it until it exits or SIGTERM arrives."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="wb-triton-") as tmp:
        work = Path(tmp)
        repo = write_repository(work / "models", loaded, args.backend, args.model_name, opts, args.warmup_seconds,
                                backend_options, args.input_dtype)
        binary, backends, libs = server_files(work)
        env = server_env()
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [env.get("LD_LIBRARY_PATH"), str(libs)] if p)
        cmd = [str(binary), f"--model-repository={repo}", f"--backend-directory={backends}",
               f"--backend-config=python,shm-default-byte-size={SHM_BYTES}",
               f"--backend-config=python,shm-region-prefix-name=wb{os.getpid()}_",
               "--model-control-mode=none",   # no load/unload over the network
               f"--http-address={args.address}", f"--grpc-address={args.address}",
               f"--metrics-address={args.address}", f"--http-port={args.http_port}", f"--grpc-port={args.grpc_port}",
               f"--metrics-port={args.metrics_port}", "--exit-timeout-secs=10", "--log-verbose=0"]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT)

        def stop(*_):
            proc.send_signal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        placed = f"on each of GPUs {list(opts.gpus)}" if opts.gpus else "on the CPU"
        print(f"PLACED {opts.instances} instance process(es) {placed} (Triton Python backend)", flush=True)
        http = f"{'127.0.0.1' if args.address in ('0.0.0.0', '') else args.address}:{args.http_port}"
        while proc.poll() is None and not ready(http):
            time.sleep(0.5)
        if proc.poll() is None:
            print(f"SERVING {args.model_name} ({loaded.label}) on {args.backend} in Triton's Python backend, "
                  f"input_values {args.input_dtype}: http {args.address}:{args.http_port} "
                  f"grpc {args.address}:{args.grpc_port} metrics {args.address}:{args.metrics_port}; config {json.dumps(str(repo))}", flush=True)
        return proc.wait()
