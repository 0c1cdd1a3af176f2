"""PyTorch CPU forwards with glibc's default malloc against core.hostmem.keep_freed_memory(): minor page faults
and p50 per forward, demo model, 5 s audio, batch 1 and 8, after 3 unrecorded forwards. One setting per process:
    python bench/results/2026-12-03-s14/malloc_ab.py default|tuned"""
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
if sys.argv[1] == "tuned":
    from core.hostmem import keep_freed_memory
    assert keep_freed_memory()
from core.backends import make_backend  # noqa: E402
from core.models import load_model  # noqa: E402

m = load_model("demo")
for spec in ("torch:fp32:cpu", "fast:fp32:cpu"):
    with make_backend(spec, m) as b:
        for batch in (1, 8):
            x = (0.1 * np.random.default_rng(0).standard_normal((batch, 80000))).astype(np.float32)
            for _ in range(3):
                b.logits(x)
            f0, ts = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
            for _ in range(10):
                t = time.perf_counter()
                b.logits(x)
                ts.append(time.perf_counter() - t)
            f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            print(f"{sys.argv[1]:8} {spec} batch {batch}: {(f1 - f0) / 10:8.0f} minor faults a forward, "
                  f"p50 {np.median(ts) * 1e3:6.1f} ms", flush=True)
