"""Triton's own load generator, perf_analyzer (NVIDIA's C++ client), as the sweep's second load generator: the same
concurrency levels against the same server with the same speech, so where its figures and the workbench client's
part, the difference is the client's cost, not the server's. perf_analyzer checks no outputs (the conformance matrix
through Triton does) and reports what it measured over its own stable windows: three in a row whose throughput and
average latency lie within its stability percentage (STABILITY_PCT), at most MAX_TRIALS windows."""
from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, WorkbenchError
from ..paths import REPO_ROOT

ENV = "WORKBENCH_PERF_ANALYZER"
TOOLS = REPO_ROOT / ".tools" / "perf_analyzer"   # where run.sh installs it (pip --target)
MAX_TRIALS = 10                                   # perf_analyzer's own defaults
STABILITY_PCT = 10
INSTALL_HINT = ("`bash run.sh app` (or `test`) installs it under .tools/perf_analyzer: tritonclient 2.51.0's "
                "manylinux wheel carries the binary (later wheels do not), which links libb64 (Debian's libb64-0d) "
                "and CUDA 12's runtime (nvidia-cuda-runtime-cu12). Or set WORKBENCH_PERF_ANALYZER to a perf_analyzer "
                "binary, e.g. the Triton SDK container's.")


def binary() -> Path | None:
    """WORKBENCH_PERF_ANALYZER, else the one run.sh installs, else perf_analyzer on PATH."""
    for candidate in (os.environ.get(ENV), TOOLS / "bin" / "perf_analyzer", shutil.which("perf_analyzer")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _env(exe: Path) -> dict:
    """The binary's environment: the CUDA 12 runtime it links, from pip's nvidia-cuda-runtime-cu12 beside it (the
    .tools layout) or from its own folder."""
    libs = [d for d in (exe.parent.parent / "nvidia" / "cuda_runtime" / "lib", exe.parent) if d.is_dir()]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(d) for d in libs] + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
    return env


def check() -> tuple[str | None, str | None]:
    """(its version line, None) where perf_analyzer runs here, else (None, what is wrong)."""
    exe = binary()
    if exe is None:
        return None, "perf_analyzer is not installed."
    try:
        out = subprocess.run([str(exe), "--version"], env=_env(exe), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"{exe} does not run: {err}."
    text = (out.stdout + out.stderr).strip()
    version = next((line for line in text.splitlines() if line.startswith("Perf Analyzer Version")), None)
    if out.returncode or not version:
        return None, f"{exe} does not run: {text.splitlines()[-1] if text else f'exit status {out.returncode}'}."
    return version, None


def available() -> tuple[bool, str]:
    """(True, its version) where perf_analyzer runs here, else (False, why and how to get it)."""
    version, problem = check()
    return (True, version) if version else (False, f"{problem} {INSTALL_HINT}")


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def input_data(clips, audio_dtype: str, with_mask: bool) -> dict:
    """perf_analyzer's --input-data: one entry per clip, its samples as little-endian bytes (base64) of the type the
    server declares, without the batch dimension (perf_analyzer sends batch 1); the mask only where the model
    requires one (a full-length clip's mask is all ones, which a model with an optional mask fills in itself)."""
    from ..backends.triton_backend import half
    entries = []
    for clip in clips:
        values = np.asarray(clip.values[0], np.float32)
        values = half(values).astype("<f2") if audio_dtype == "FP16" else values.astype("<f4")
        entry = {"input_values": {"b64": _b64(values), "shape": [len(values)]}}
        if with_mask:
            entry["attention_mask"] = {"b64": _b64(np.asarray(clip.mask[0]).astype("<i8")), "shape": [len(values)]}
        entries.append(entry)
    return {"data": entries}


class Runner:
    """One perf_analyzer process per concurrency level against one model; `with Runner(...) as run: run(level)`."""

    def __init__(self, url: str, protocol: str, model_name: str, data: dict, audio_s: float, window_s: float,
                 max_trials: int = MAX_TRIALS, stability_pct: float | None = None):
        self.version, problem = check()
        if problem:
            raise BackendUnavailableError(problem, INSTALL_HINT)
        self.exe, self.url, self.protocol, self.model_name = binary(), url, protocol, model_name
        self.audio_s, self.window_s = audio_s, window_s
        self.max_trials, self.stability_pct = max_trials, stability_pct or STABILITY_PCT
        self._dir = tempfile.TemporaryDirectory(prefix="wb-perf-analyzer-")
        self.data_path = Path(self._dir.name) / "input.json"
        self.data_path.write_text(json.dumps(data), encoding="utf-8")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._dir.cleanup()

    def command(self, level: int, csv_path: Path) -> list[str]:
        return [str(self.exe), "-m", self.model_name, "-u", self.url, "-i", self.protocol,
                "--concurrency-range", f"{level}:{level}", "--measurement-mode", "time_windows",
                "-p", str(max(1, round(self.window_s * 1000))), "--max-trials", str(self.max_trials),
                "--stability-percentage", f"{self.stability_pct:g}",
                "--input-data", str(self.data_path), "-f", str(csv_path), "--verbose-csv"]

    def __call__(self, level: int) -> dict:
        """The level's figures in the sweep's row keys (ms; server figures over perf_analyzer's stable windows), or
        n=0 with the reason when it found no stable measurement or could not reach the server."""
        csv_path = Path(self._dir.name) / f"c{level}.csv"
        cmd = self.command(level, csv_path)
        limit = self.window_s * (self.max_trials + 2) + 120   # its windows, the server's warm-up, start and exit
        try:
            out = subprocess.run(cmd, env=_env(self.exe), capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return failed(level, f"perf_analyzer did not finish within {limit:.0f} s")
        text = out.stdout + out.stderr
        if out.returncode or not csv_path.is_file():
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            why = next((line for line in lines if re.search(r"error|failed|unable", line, re.I)),
                       lines[-1] if lines else f"exit status {out.returncode}")
            if "stable measurement" in why:   # its hint names its own flag: say ours
                why += f" (the sweep's --seconds sets the window, {self.window_s:g} s; --stability-pct the margin)"
            return failed(level, f"perf_analyzer: {why}"[:400])
        return {**parse(csv_path.read_text(), text, level, self.audio_s), "load_generator_version": self.version,
                "load_generator_command": " ".join(cmd)}


def failed(level: int, why: str) -> dict:
    nan = float("nan")   # as a workbench level with no answer
    return {"load_generator": "perf_analyzer", "concurrency": level, "n": 0, "errors": 1, "error_examples": [why],
            "requests_sent": 0, "items_per_s": 0.0, "audio_s_per_s": 0.0, "p50_ms": nan, "p90_ms": nan, "p99_ms": nan,
            "mean_ms": nan, "in_flight": 0.0, "rtf": None, "consistency": None, "hung_clients": 0,
            "client_cpu_pct": None, "client_processes": 1, "client_bound": False, "server_stats": False}


def _count(pattern: str, text: str) -> int | None:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else None


def parse(csv_text: str, stdout: str, level: int, audio_s: float) -> dict:
    """perf_analyzer's CSV row (microseconds) and the counts its report prints, as the sweep's row keys (audio_s: the
    mean seconds of audio a request carries)."""
    rows = [r for r in csv.DictReader(csv_text.splitlines()) if r.get("Concurrency", "").strip() == str(level)]
    if not rows:
        raise WorkbenchError(f"perf_analyzer wrote no row for concurrency {level}.", "Run it by hand to see why.")
    r = {k.strip(): v for k, v in rows[-1].items()}

    def ms(key):
        return float(r[key]) / 1e3 if r.get(key) not in (None, "") else None
    rate = float(r["Inferences/Second"])
    n = _count(r"Request count: (\d+)", stdout)
    inferences, executions = _count(r"Inference count: (\d+)", stdout), _count(r"Execution count: (\d+)", stdout)
    server = _count(r"Avg request latency: (\d+) usec", stdout)
    io = [ms(k) for k in ("Server Compute Input", "Server Compute Output")]
    mean = ms("Avg latency")
    return {"load_generator": "perf_analyzer", "concurrency": level, "n": n or 0, "errors": 0, "error_examples": [],
            "requests_sent": n, "items_per_s": rate, "audio_s_per_s": rate * audio_s,
            "wall_s": n / rate if n and rate else None,
            "p50_ms": ms("p50 latency"), "p90_ms": ms("p90 latency"), "p99_ms": ms("p99 latency"), "mean_ms": mean,
            "in_flight": rate * mean / 1e3 if mean is not None else None,   # Little's law, as the workbench's rows
            "rtf": mean / 1e3 / audio_s if mean is not None and audio_s else None,
            "consistency": None, "hung_clients": 0, "client_cpu_pct": None, "client_processes": 1,
            "client_bound": False,
            "server_stats": server is not None, "server_requests": inferences, "server_batches": executions,
            "server_avg_batch": inferences / executions if inferences and executions else None,
            "server_queue_ms": ms("Server Queue"), "server_compute_ms": ms("Server Compute Infer"),
            "server_io_ms": sum(io) if None not in io else None,
            "server_total_ms": server / 1e3 if server is not None else None, "server_fail": 0}
