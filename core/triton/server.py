"""Start, health-check and stop a local Triton server (core.triton.serve) as a background process.

The server runs in its own process group (tritonserver and the Python-backend stubs are its children), so
stopping it stops all of them. A state file per server (artifacts/triton/<name>.json) records pid and ports,
so another shell (or the dashboard) can find or stop it."""
from __future__ import annotations

import datetime as dt
import glob
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import WorkbenchError
from ..paths import REPO_ROOT, artifacts_dir, process_identity, same_process, write_json_atomic
from .batching import preferred_sizes
from .repo import audio_dtype
from .pybackend import libpython_env, ready
from .serve import MODEL_NAME


class TritonServerError(WorkbenchError):
    pass


def preflight(numpy_version: str | None = None) -> None:
    """Refuse to start a server that cannot answer: PyTriton missing, or NumPy 2.

    PyTriton 0.7 pins numpy<2: its bundled Python-backend stub is built for NumPy 1, and under NumPy 2 the server
    answers every request with empty outputs (seen on the GPU machine, reproduced on the CPU). The stub imports
    from the environment of the interpreter that starts the server (sys.exec_prefix), not from PYTHONPATH, so
    that environment itself needs numpy<2."""
    if importlib.util.find_spec("pytriton") is None:
        raise TritonServerError("PyTriton is not installed, so no local Triton server can start.",
                                "pip install nvidia-pytriton==0.7.0 (bundles Triton's server binary).")
    import numpy
    version = numpy_version or numpy.__version__
    if int(version.split(".")[0]) >= 2:
        raise TritonServerError(f"PyTriton 0.7 needs numpy<2 but this interpreter has numpy {version}: its server "
                                "would return empty outputs for every request.",
                                'pip install "numpy<2" in the environment that runs the server; where other '
                                "packages there need NumPy 2, a venv over it with numpy<2 first works "
                                "(bench/device_numpy1_env.sh builds one).")


@dataclass
class ServerInfo:
    name: str
    pid: int
    address: str
    http_port: int
    grpc_port: int
    metrics_port: int
    model: str | None
    backend: str
    model_name: str
    log: str
    started: str
    identity: dict | None = None   # pid + start time + command line: what `stop` checks before signalling
    audio: str = "FP32"            # the served input_values type (a state file from before it was recorded: FP32)

    def url(self, protocol: str = "http") -> str:
        host = "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address
        return f"{host}:{self.http_port if protocol == 'http' else self.grpc_port}"


_CHILDREN: dict[int, subprocess.Popen] = {}  # servers this process started (so they are reaped, not zombies)


def state_dir() -> Path:
    d = artifacts_dir() / "triton"
    d.mkdir(parents=True, exist_ok=True)
    return d


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def alive(info: "ServerInfo") -> bool:
    """Whether the server recorded in `info` still runs (not a zombie, not another process under its PID)."""
    proc = _CHILDREN.get(info.pid)
    if proc is not None:
        return proc.poll() is None
    return same_process(info.identity)


def log_tail(path: str | Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


_STATE_KEYS = {f.name for f in fields(ServerInfo)}


def read_state(name: str = "default") -> ServerInfo | None:
    """The running server of this name, or None (a stale state file is removed)."""
    path = state_dir() / f"{name}.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        # keys no longer recorded (a 'decoupled' flag, from before that mode was removed) are ignored
        info = ServerInfo(**{k: v for k, v in saved.items() if k in _STATE_KEYS})
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if not alive(info):   # gone, or its PID now belongs to another process: forget it, never signal it
        path.unlink(missing_ok=True)
        return None
    return info


def wait_ready(info: ServerInfo, timeout_s: float = 300.0) -> ServerInfo:
    """Block until the server and its model are ready; a clear error (with the log tail) if it dies or stalls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(info):
            code = _CHILDREN[info.pid].returncode if info.pid in _CHILDREN else "?"
            raise TritonServerError(f"The Triton server exited (code {code}) before it was ready. Log tail "
                                    f"({info.log}):\n{log_tail(info.log)}",
                                    "Fix the cause shown in the log; ports in use and model load errors are usual.")
        if ready(info.url("http"), info.model_name):
            return info
        time.sleep(0.5)
    stop(info)
    raise TritonServerError(f"The Triton server was not ready after {timeout_s:.0f} s; stopped it. Log tail:\n"
                            f"{log_tail(info.log)}", "Large models load slowly: give a longer timeout.")


def start(model: str | None, backend: str = "ort:fp32:cpu", *, name: str = "default", model_name: str = MODEL_NAME,
          address: str = "127.0.0.1", http_port: int | None = None, grpc_port: int | None = None,
          metrics_port: int | None = None, max_batch: int = 8, preferred=(), max_queue_delay_us: int = 500,
          instances: int = 1, threads: int | None = None, warmup_s: float | None = None,
          timeout_s: float = 300.0, gpus=None, python_backend: bool = False,
          backend_options: dict | None = None, input_dtype: str = "auto") -> ServerInfo:
    """Start `python -m core.triton.serve` in the background and wait until it serves `model_name`;
    backend_options: keyword options of each instance's backend (e.g. the fast backend's batch_buckets);
    input_dtype: the served audio's type (core.triton.repo.audio_dtype)."""
    preferred = preferred_sizes(preferred, max_batch)   # before anything starts: a bad size is one clear line
    audio = audio_dtype(input_dtype, backend)           # and so is a bad input type
    preflight()
    running = read_state(name)
    if running:
        raise TritonServerError(f"A Triton server named '{name}' is already running (pid {running.pid}, "
                                f"http {running.url('http')}).", "Stop it first: python -m core serve --stop")
    ports = [http_port or free_port(), grpc_port or free_port(), metrics_port or free_port()]
    if len(set(ports)) < 3:
        raise TritonServerError(f"HTTP, gRPC and metrics ports must differ (got {ports}).", "Pick three ports.")
    cmd = [sys.executable, "-m", "core.triton.serve", "--backend", backend, "--model-name", model_name,
           "--address", address, "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
           "--metrics-port", str(ports[2]), "--max-batch", str(max_batch), "--max-queue-delay-us",
           str(max_queue_delay_us), "--instances", str(instances)]
    cmd += ["--preferred", *map(str, preferred)] if preferred else []
    cmd += ["--model", model] if model else []
    cmd += ["--threads", str(threads)] if threads else []
    cmd += ["--warmup-seconds", str(warmup_s)] if warmup_s else []
    cmd += ["--gpus", *map(str, gpus)] if gpus else []   # instances on each chosen GPU (core.triton.serve)
    cmd += ["--python-backend"] if python_backend else []   # each instance its own process (core.triton.pybackend)
    cmd += ["--input-dtype", input_dtype]
    for key, value in (backend_options or {}).items():
        cmd += ["--backend-option", f"{key}={json.dumps(value)}"]
    log = state_dir() / f"{name}.log"
    env = libpython_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=REPO_ROOT, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    info = ServerInfo(name, proc.pid, address, *ports, model, backend, model_name, str(log),
                      dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), process_identity(proc.pid), audio)
    write_json_atomic(state_dir() / f"{name}.json", asdict(info))
    try:
        return wait_ready(info, timeout_s)
    except BaseException:
        stop(info)
        raise


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the server is its own process-group leader (start_new_session)
    except ProcessLookupError:
        pass


def stop(server: ServerInfo | str = "default", timeout_s: float = 20.0) -> bool:
    """SIGTERM the server's process group, wait, then SIGKILL what is left. False if nothing was running."""
    info = read_state(server) if isinstance(server, str) else server
    if info is None:
        return False
    if not alive(info):   # already gone, or the PID is someone else's now: nothing of ours to signal
        (state_dir() / f"{info.name}.json").unlink(missing_ok=True)
        return False
    _signal_group(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(info) and time.monotonic() < deadline:
        time.sleep(0.2)
    # stragglers (stubs, tritonserver) too: the group outlives its leader, and its id is not reused while it has members
    _signal_group(info.pid, signal.SIGKILL)
    if info.pid in _CHILDREN:
        _CHILDREN.pop(info.pid).wait(timeout=10)
    for leftover in glob.glob(f"/dev/shm/pytrtion{info.pid}-*"):  # PyTriton's shared memory after a hard kill
        try:
            os.unlink(leftover)
        except OSError:
            pass
    (state_dir() / f"{info.name}.json").unlink(missing_ok=True)
    return True
