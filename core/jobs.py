"""Background jobs: a `python -m core …` command in its own OS process, its state on disk.

A job outlives the dashboard page (and the dashboard process): the state lives in
artifacts/jobs/<id>/state.json (written atomically) and log.txt. A small supervisor
(`python -m core.jobs <dir>`, in its own session so a cancel can kill the whole group) runs the
command, streams its output to the log and records the exit code. The job id is a hash of the
command, so starting the same build twice returns the running job instead of a second copy.
Commands may print `progress: 0.42 <message>` lines; the dashboard shows them as a progress bar.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .paths import REPO_ROOT, artifacts_dir, process_identity, same_process, write_json_atomic

ACTIVE = ("queued", "running")
PROGRESS = re.compile(r"^progress:\s*([0-9]*\.?[0-9]+)\s*(.*)$")


def jobs_dir() -> Path:
    return artifacts_dir() / "jobs"


def job_id(args: list[str]) -> str:
    return hashlib.sha256(json.dumps(list(args)).encode()).hexdigest()[:12]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Job:
    dir: Path

    @property
    def id(self) -> str:
        return self.dir.name

    @property
    def log_path(self) -> Path:
        return self.dir / "log.txt"

    def state(self) -> dict:
        """The recorded state; a job whose supervisor vanished (killed, machine restarted) reads as failed."""
        try:
            state = json.loads((self.dir / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"id": self.id, "status": "unknown", "command": []}
        if state.get("status") in ACTIVE and state.get("pid") and not self._ours(state):
            time.sleep(0.2)  # the supervisor may be writing its final state right now
            try:
                state = json.loads((self.dir / "state.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
            if state.get("status") in ACTIVE:
                state.update(status="failed", ended=_now(), error="the job's process disappeared")
                write_json_atomic(self.dir / "state.json", state)
        return state

    @property
    def status(self) -> str:
        return self.state().get("status", "unknown")

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def log(self, max_chars: int = 20000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, 2) - max_chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def progress(self) -> tuple[float | None, str]:
        """(fraction 0..1 or None when the command reports none, last message)."""
        fraction, message = None, ""
        for line in self.log().splitlines():
            m = PROGRESS.match(line.strip())
            if m:
                fraction, message = min(max(float(m.group(1)), 0.0), 1.0), m.group(2)
            elif line.strip():
                message = line.strip()
        return fraction, message

    @staticmethod
    def _ours(state: dict) -> bool:
        """Whether the job's supervisor still runs: its PID with the start time and command line recorded
        (a PID alone may have been reused by an unrelated process)."""
        identity = state.get("identity")
        if identity is None:   # queued, the supervisor not yet recorded: its PID from start() is all there is
            from .paths import pid_alive
            return pid_alive(state.get("pid"))
        return same_process(identity)

    def cancel(self, grace_s: float = 5.0) -> None:
        """Kill the job's whole process group: SIGTERM, then SIGKILL after `grace_s` — only if the recorded
        process is still the job's supervisor."""
        state = self.state()
        if state.get("status") not in ACTIVE:
            return
        (self.dir / "cancel").touch()
        pid = state.get("pid")
        try:
            if self._ours(state):
                os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + grace_s
                while self._ours(state) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self._ours(state):
                    os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, TypeError):
            pass
        state = self.state()
        if state.get("status") in ACTIVE or state.get("status") == "failed" and (self.dir / "cancel").exists():
            state.update(status="cancelled", ended=state.get("ended") or _now())
            write_json_atomic(self.dir / "state.json", state)

    def wait(self, timeout: float = 600, poll: float = 0.2) -> dict:
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(poll)
        return self.state()


def get(jid: str) -> Job | None:
    path = jobs_dir() / jid
    return Job(path) if (path / "state.json").exists() else None


def start(args: list[str], label: str = "") -> Job:
    """Start `python -m core <args>` in the background, or return the same command's running job."""
    args = [str(a) for a in args]
    jid = job_id(args)
    existing = get(jid)
    if existing and existing.active:
        return existing
    job = Job(jobs_dir() / jid)
    job.dir.mkdir(parents=True, exist_ok=True)
    for stale in ("cancel", "log.txt"):
        (job.dir / stale).unlink(missing_ok=True)
    write_json_atomic(job.dir / "state.json", {"id": jid, "label": label or " ".join(args), "command": args,
                                               "status": "queued", "pid": None, "created": _now()})
    env = dict(os.environ, WORKBENCH_ARTIFACTS=str(artifacts_dir()), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "core.jobs", str(job.dir)], cwd=REPO_ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    state = json.loads((job.dir / "state.json").read_text(encoding="utf-8"))
    if state.get("status") == "queued" and not state.get("identity"):  # the supervisor may have recorded itself
        state["pid"] = proc.pid
        write_json_atomic(job.dir / "state.json", state)
    return job


def list_jobs() -> list[dict]:
    """Every job's state, newest first."""
    out = [Job(p.parent).state() for p in jobs_dir().glob("*/state.json")]
    return sorted(out, key=lambda s: s.get("created", ""), reverse=True)


def finished_artifacts() -> list[dict]:
    """One row per finished pipeline artifact (ONNX, variants, engines, Triton repositories), with its status; the
    newest first, so what a build just made heads the Build page's list."""
    from .pipeline.listing import artifact_rows
    rows = [dict(r, artifact=str(Path(r["dir"]).relative_to(artifacts_dir()))) for r in artifact_rows()]
    return sorted(rows, key=lambda r: r.get("created") or "", reverse=True)


def slots() -> int:
    """How many jobs run at once: one by default — builds, benchmarks and sweeps each want the whole device (its
    GPU, or its cores), and two at once would skew each other's timings. WORKBENCH_JOB_SLOTS=N allows more."""
    return max(1, int(os.environ.get("WORKBENCH_JOB_SLOTS", 1)))


def _take_slot(log) -> object:
    """Block until one of the job slots is free (a file lock each, released when this process ends)."""
    import fcntl
    jobs_dir().mkdir(parents=True, exist_ok=True)
    said = False
    while True:
        for i in range(slots()):
            f = open(jobs_dir() / f".slot{i}", "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return f
            except BlockingIOError:
                f.close()
        if not said:
            log.write(f"queued: waiting for one of {slots()} job slot(s) to free up\n".encode())
            said = True
        time.sleep(0.25)


def _supervise(job_dir: Path) -> int:
    """Wait for a job slot, run the job's command in this (new) session, log its output, record how it ended."""
    job = Job(job_dir)
    state = json.loads((job_dir / "state.json").read_text(encoding="utf-8"))
    state.update(pid=os.getpid(), identity=process_identity(os.getpid()))
    write_json_atomic(job_dir / "state.json", state)
    with open(job.log_path, "ab", buffering=0) as log:
        slot = _take_slot(log)  # held (locked) while the command runs
        state.update(status="running", started=_now())
        write_json_atomic(job_dir / "state.json", state)
        log.write(f"$ python -m core {' '.join(state['command'])}\n".encode())
        child = subprocess.Popen([sys.executable, "-m", "core", *state["command"]], cwd=REPO_ROOT,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        state["child_pid"] = child.pid
        write_json_atomic(job_dir / "state.json", state)

        def forward(signum, _frame):  # a cancel reaches the child too (same group), but be explicit
            child.send_signal(signum)
        signal.signal(signal.SIGTERM, forward)
        code = child.wait()
        slot.close()  # the next queued job may start
    cancelled = (job_dir / "cancel").exists()
    state.update(status="cancelled" if cancelled else "done" if code == 0 else "failed", exit_code=code,
                 ended=_now())
    write_json_atomic(job_dir / "state.json", state)
    return code


if __name__ == "__main__":
    sys.exit(_supervise(Path(sys.argv[1])))
