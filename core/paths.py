"""Where things live, and atomic writes so an interrupted job never leaves a finished-looking file."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

from .errors import StorageError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL_DIR = REPO_ROOT / "models" / "demo-hindi-synth"
DEMO_TESTSET = REPO_ROOT / "data" / "demo_testset" / "manifest.tsv"
SPEECH_CLIPS = 12   # the conformance cells are cut from the first clips of DEMO_TESTSET: calibration never uses them


def artifacts_dir() -> Path:
    """Root of generated files; WORKBENCH_ARTIFACTS overrides it (tests use a temp dir)."""
    root = Path(os.environ.get("WORKBENCH_ARTIFACTS", REPO_ROOT / "artifacts"))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(err, root) from err
    return root


STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def storage_error(err: OSError, path: Path | str) -> StorageError:
    """A full, read-only or forbidden artifacts folder, in the workbench's words."""
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EROFS: "the file system is read-only"}.get(err.errno, err.strerror or str(err))
    return StorageError(f"Cannot write {path}: {why}.",
                        "Free some space, or point WORKBENCH_ARTIFACTS at a writable folder with room "
                        "(`python -m core artifacts --prune` removes stale artifacts).")


@contextlib.contextmanager
def atomic_path(final: Path | str):
    """Yield a temporary path in the same directory; rename it onto `final` only on success."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    except OSError as err:
        raise (storage_error(err, final) if err.errno in STORAGE_ERRNOS else err) from err
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except OSError as err:
        if err.errno in STORAGE_ERRNOS:
            raise storage_error(err, final) from err
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path | str, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


def process_identity(pid: int | None) -> dict | None:
    """What identifies a process beyond its PID (which the OS reuses): the boot it runs in and its start time in
    clock ticks since that boot. Neither moves with the wall clock (psutil's create_time does: it adds a boot time
    read from the clock at each call) nor with exec (the command line does: read just after Popen it can be the
    parent's, or empty mid-exec, and a server recorded that way could never be stopped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return {"pid": pid, "boot_id": _boot_id(), "started_s": int(fields[19]) / os.sysconf("SC_CLK_TCK")}
    except (TypeError, ValueError, OSError, IndexError):
        return None


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def same_process(identity: dict | None) -> bool:
    """Whether the process recorded in `identity` still runs: same PID, boot and start time, not a zombie. A
    reused PID (after a reboot, or a long time) is another process and must never be signalled."""
    if not identity or not pid_alive(identity.get("pid")):
        return False
    now = process_identity(identity["pid"])
    return bool(now) and all(now[k] == identity.get(k) for k in ("boot_id", "started_s"))


def pid_alive(pid: int | None) -> bool:
    """Whether a process runs (a zombie, exited but not yet reaped, counts as gone)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True
