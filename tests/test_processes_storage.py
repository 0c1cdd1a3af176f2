"""Process control that cannot hit a stranger (a PID recorded by a job or server and since reused is never
signalled), a full or read-only artifacts folder answered in one line, and the dashboard's bind address as
`bash run.sh app` really starts it."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from core import jobs
from core.paths import REPO_ROOT, process_identity, same_process, write_json_atomic


@pytest.fixture()
def stranger():
    """An unrelated process leading its own process group: what a reused PID would point at."""
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _reused(identity: dict) -> dict:
    """The identity an earlier process with the same PID would have left: started long before this one."""
    return dict(identity, started_s=identity["started_s"] - 3600)


def test_identity_tells_a_reused_pid_apart(stranger):
    me = process_identity(stranger.pid)
    assert me["pid"] == stranger.pid and me["started_s"] > 0
    assert same_process(me) and not same_process(_reused(me)) and not same_process(None)
    assert not same_process(dict(me, boot_id="another-boot"))     # the same PID and tick count after a reboot


def test_identity_recorded_before_exec_still_matches_after_it():
    """A server's identity is read right after Popen, when the child may not have exec'd yet (its command line
    then reads empty or as the parent's: two CI failures, 2026-12-03); it must still name the same process once
    the program runs, or stop would forget a live server instead of stopping it."""
    proc = subprocess.Popen(["sh", "-c", "read go; exec sleep 120"], stdin=subprocess.PIPE, start_new_session=True)
    try:
        before = process_identity(proc.pid)
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        deadline = time.time() + 10
        while open(f"/proc/{proc.pid}/cmdline", "rb").read() != b"sleep\x00120\x00" and time.time() < deadline:
            time.sleep(0.01)
        assert open(f"/proc/{proc.pid}/cmdline", "rb").read() == b"sleep\x00120\x00"   # it has exec'd
        assert same_process(before)
    finally:
        proc.kill()
        proc.wait()


def test_identity_survives_a_wall_clock_change(stranger, monkeypatch):
    """A process recorded before the wall clock moves is still the same process after it: psutil's create_time
    adds a boot time read from the wall clock at each call, so it shifts with every step or slew; when it flipped
    by a second, a job's own supervisor would pass for a stranger and a cancel would signal nothing (the likely
    cause of a CI failure of the cancel test below, 2026-12-03)."""
    from psutil import _pslinux
    me = process_identity(stranger.pid)
    boot = _pslinux.boot_time()
    monkeypatch.setattr(_pslinux, "boot_time", lambda: boot + 1.0)   # the clock set one second on
    assert same_process(me)


def test_cancel_never_signals_a_process_that_is_not_the_job(stranger):
    job = jobs.Job(jobs.jobs_dir() / "reused-pid-job")
    job.dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job.dir / "state.json", {
        "id": job.id, "label": "left from an earlier dashboard", "command": ["bench"], "status": "running",
        "pid": stranger.pid, "identity": _reused(process_identity(stranger.pid)), "created": "2026-11-01T00:00:00"})
    assert job.state()["status"] == "failed"         # its supervisor is gone: the PID is someone else's
    job.cancel()
    time.sleep(0.3)
    assert stranger.poll() is None                    # the stranger was not signalled


def test_cancel_does_stop_the_job_it_recorded(stranger):
    """The control: with the identity that matches, cancel kills the process group (so the test above can fail)."""
    job = jobs.Job(jobs.jobs_dir() / "own-pid-job")
    job.dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job.dir / "state.json", {
        "id": job.id, "label": "ours", "command": ["bench"], "status": "running", "pid": stranger.pid,
        "identity": process_identity(stranger.pid), "created": "2026-11-01T00:00:00"})
    job.cancel(grace_s=2)
    assert stranger.wait(timeout=5) is not None and job.state()["status"] == "cancelled"


def test_a_server_state_pointing_at_a_stranger_is_forgotten_not_signalled(stranger):
    from core.triton import server
    path = server.state_dir() / "reused.json"
    info = {"name": "reused", "pid": stranger.pid, "address": "127.0.0.1", "http_port": 1, "grpc_port": 2,
            "metrics_port": 3, "model": None, "backend": "ort:fp32:cpu", "model_name": "asr", "log": "/dev/null",
            "started": "2026-11-01T00:00:00", "identity": _reused(process_identity(stranger.pid))}
    path.write_text(json.dumps(info))
    assert server.stop("reused") is False and stranger.poll() is None
    path.write_text(json.dumps(info))
    assert server.read_state("reused") is None and not path.exists()
    assert server.stop(server.ServerInfo(**info)) is False
    time.sleep(0.3)
    assert stranger.poll() is None


def test_an_old_server_state_with_keys_no_longer_recorded_still_loads(stranger):
    """A state file written while `serve --decoupled` existed carries a 'decoupled' key: it is read, not dropped."""
    from core.triton import server
    path = server.state_dir() / "old-keys.json"
    info = {"name": "old-keys", "pid": stranger.pid, "address": "127.0.0.1", "http_port": 1, "grpc_port": 2,
            "metrics_port": 3, "model": None, "backend": "ort:fp32:cpu", "model_name": "asr", "log": "/dev/null",
            "started": "2026-12-04T00:00:00", "identity": process_identity(stranger.pid), "audio": "FP16",
            "decoupled": True}
    path.write_text(json.dumps(info))
    try:
        got = server.read_state("old-keys")
        assert got is not None and got.pid == stranger.pid and got.audio == "FP16"
        assert not hasattr(got, "decoupled")
    finally:
        path.unlink(missing_ok=True)


def _in_namespace(script: str) -> subprocess.CompletedProcess:
    """`script` in a private mount namespace (tmpfs mounts vanish with it): the only way to get a full or a
    read-only file system when tests run as root, for whom permission bits do not stop a write."""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=600)


def test_full_artifacts_folder_is_one_clear_line():
    out = _in_namespace(
        "D=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $D && (dd if=/dev/zero of=$D/fill bs=4k 2>/dev/null; true)"
        f" && WORKBENCH_ARTIFACTS=$D {sys.executable} -m core results")
    assert out.returncode == 2, out.stderr
    assert "the disk is full" in out.stderr and "WORKBENCH_ARTIFACTS" in out.stderr and "Traceback" not in out.stderr


def test_read_only_artifacts_folder_is_one_clear_line():
    out = _in_namespace(
        "D=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $D && mount -o remount,ro $D"
        f" && WORKBENCH_ARTIFACTS=$D {sys.executable} -m core build onnx --model random:wav2vec2-tiny")
    assert out.returncode == 2, out.stderr
    assert "read-only" in out.stderr and "Traceback" not in out.stderr


def _listening(port: int) -> set[str]:
    """Local addresses listening on `port`, from the kernel's own table (IPv4 and IPv6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:   # 0A: LISTEN
                found.add("0.0.0.0" if set(addr) == {"0"} and width == 8 else
                          "::" if set(addr) == {"0"} else
                          socket.inet_ntoa(bytes.fromhex(addr)[::-1]) if width == 8 else addr)
    return found


def test_run_sh_app_binds_localhost_only():
    """`bash run.sh app` exactly as the README gives it (it installs, then starts Streamlit): the dashboard
    answers on 127.0.0.1 and listens on no other address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_ADDRESS"}
    proc = subprocess.Popen(["bash", "run.sh", "app", "--server.port", str(port)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, ok = time.monotonic() + 240, False
        while time.monotonic() < deadline and proc.poll() is None and not ok:
            try:
                ok = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status == 200
            except OSError:
                time.sleep(1)
        assert ok, proc.stdout.read1().decode(errors="replace") if proc.poll() is not None else "no answer"
        assert _listening(port) == {"127.0.0.1"}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
