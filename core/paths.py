"""Where things live, and atomic writes so an interrupted job never leaves a finished-looking file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL_DIR = REPO_ROOT / "models" / "demo-hindi-synth"
DEMO_TESTSET = REPO_ROOT / "data" / "demo_testset" / "manifest.tsv"


def artifacts_dir() -> Path:
    """Root of generated files; WORKBENCH_ARTIFACTS overrides it (tests use a temp dir)."""
    root = Path(os.environ.get("WORKBENCH_ARTIFACTS", REPO_ROOT / "artifacts"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def atomic_path(final: Path | str):
    """Yield a temporary path in the same directory; rename it onto `final` only on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path | str, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


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
