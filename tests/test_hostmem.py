"""core.hostmem: the workbench's processes keep freed memory instead of faulting it in again on every allocation."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.paths import REPO_ROOT

PROBE = """
import resource, sys
import numpy as np
sys.path.insert(0, {root!r})
if {tuned}:
    from core.hostmem import describe, keep_freed_memory
    assert keep_freed_memory(), "not glibc"
    print(describe(), file=sys.stderr)
for _ in range(3):
    np.ones(10 << 20, np.float32).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    np.ones(10 << 20, np.float32).sum()   # 40 MiB: above glibc's largest dynamic mmap threshold (32 MiB)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(tuned: bool, env=None) -> tuple[int, str]:
    env = {k: v for k, v in (env or os.environ).items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(REPO_ROOT), tuned=tuned)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout), out.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_freed_memory_is_reused_without_page_faults():
    default, _ = faults(False)
    tuned, said = faults(True)
    print(f"minor page faults over 20 allocations of 40 MiB: {default} by default, {tuned} with keep_freed_memory")
    # every allocation faults its memory in again by default: at least once each (a 2 MiB transparent huge page
    # is one fault, so the count is 20 x 20 where the kernel had huge pages to give, as in CI, and up to 20 x 10,240
    # where it had not), and almost never once the heap keeps it
    assert default >= 20 and tuned <= default / 20, (default, tuned)
    assert said.strip() == "glibc mmap threshold 64 MiB, trim threshold 128 MiB"


def test_processes_started_later_inherit_it_and_results_record_it():
    code = ("import os, sys; sys.path.insert(0, %r); from core.hostmem import keep_freed_memory; keep_freed_memory();"
            "from core.envinfo import environment; print(os.environ['MALLOC_MMAP_THRESHOLD_'], "
            "os.environ['MALLOC_TRIM_THRESHOLD_'], environment()['malloc'], sep='|')" % str(REPO_ROOT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == f"{64 << 20}|{128 << 20}|glibc mmap threshold 64 MiB, trim threshold 128 MiB"
    # a value the user set wins, and is what the results record
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, MALLOC_TRIM_THRESHOLD_=str(256 << 20)),
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith(f"|{256 << 20}|glibc mmap threshold 64 MiB, trim threshold 256 MiB")


def test_the_cli_runs_with_it():
    out = subprocess.run([sys.executable, "-m", "core", "info"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")})
    assert out.returncode == 0, out.stderr
    assert any(line.split() == ["malloc", "glibc", "mmap", "threshold", "64", "MiB,", "trim", "threshold", "128", "MiB"]
               for line in out.stdout.splitlines()), out.stdout
