"""Each concurrency level of a stored gpu_triton.py log beside its instances' server-side stage p50s, for logs
written before the summaries carried their wall-clock span (newer logs print this themselves: "level N ... p50
ms"). Pairs the n-th summary of each instance after its first (the warm-up request) with the n-th level, which
holds where a summary was printed every 10 s and levels ran 10 s apart (check the batch counts: an instance's
batches times the level's average batch, times two instances, should come near the level's requests).

    python bench/stored_level_stages.py bench/results/2026-12-07-s24/t32/triton_pyb_mb32_i2_l10_r5.log"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.triton.stages import parse_summary  # noqa: E402

LEVEL = re.compile(r"^ +(pa )?\d+ +\d+ +\d+ ")   # a row of the log's final table (pa: perf_analyzer's)


def main(paths: list[str]) -> int:
    for path in paths:
        lines = Path(path).read_text(errors="replace").splitlines()
        by = {}
        for line in lines:
            s = parse_summary(line)
            if s:
                by.setdefault(s["label"], []).append(s)
        print(f"== {path}\n{'level':>6}{'ok':>7}{'audio-s/s':>11}{'batch':>7}{'queue':>7}{'compute':>9}  per instance: "
              "batches, p50 pad / prepare / run ms, to_host p50/p90 ms")
        for i, row in enumerate(line for line in lines if LEVEL.match(line)):
            f = row.split()
            name = " ".join(f[:2]) if f[0] == "pa" else f[0]
            f = f[1:] if f[0] == "pa" else f
            ok, rate, batch, queue, compute = f[1], f[4], f[8], f[9], f[10]
            per = [f"{s['batches']} {s['p50'].get('pad', 0):.2f}/{s['p50'].get('prepare', 0):.2f}/"
                   f"{s['p50'].get('run', 0):.2f} {s['p50'].get('to_host', 0):.2f}/{s['p90'].get('to_host', 0):.2f}"
                   for _, v in sorted(by.items()) if len(v) > i + 1 for s in [v[i + 1]]]
            print(f"{name:>6}{ok:>7}{rate:>11}{batch:>7}{queue:>7}{compute:>9}  " + " | ".join(per))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
