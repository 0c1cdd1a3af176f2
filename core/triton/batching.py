"""The dynamic batcher's preferred batch sizes, from the CLI, the dashboard or a repository option."""
from __future__ import annotations

import re

from ..errors import WorkbenchError


def preferred_sizes(value, max_batch: int) -> tuple[int, ...]:
    """"4 8", "4,8" or a sequence of ints -> sorted unique sizes, each within 1..max_batch.

    At concurrency C with N instances, a preferred size above C / N lets the batcher hand every waiting request to
    one instance while the others idle (figures in docs/triton.md)."""
    if isinstance(value, str):
        words = [w for w in re.split(r"[\s,]+", value.strip()) if w]
        bad = [w for w in words if not w.isdigit()]
        if bad:
            raise WorkbenchError(f"Preferred batch sizes must be whole numbers, not {', '.join(map(repr, bad))}.",
                                 "Give sizes such as '4 8', or leave the field empty for none.")
        value = [int(w) for w in words]
    sizes = tuple(sorted(set(int(v) for v in value)))
    outside = [s for s in sizes if not 1 <= s <= max_batch]
    if outside:
        raise WorkbenchError(f"Preferred batch sizes {list(outside)} are outside 1..{max_batch} (max batch).",
                             "Give preferred sizes no larger than the max batch.")
    return sizes
