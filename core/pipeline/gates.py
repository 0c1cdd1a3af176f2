"""The verification gate every stage's artifact passes before it is offered as a backend: max |delta logit|
against PyTorch FP32 over real speech (relative to the reference's logit scale, the conformance matrix's
limits), the conformance matrix's cells at its smallest batches, and the WER delta against FP32 on a labelled set
(the shipped demo set by default)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..check import TOLERANCES

# WER delta limits in percentage points: a variant may cost this much accuracy against FP32 and still pass
WER_DELTA_POINTS = {"fp32": 0.5, "fp16": 0.5, "bf16": 0.5, "mixed": 0.5, "int8": 2.0, "int4w": 2.0, "int8w": 2.0,
                    "fp8": 2.0}


@dataclass
class Gate:
    max_rel_dlogit: float
    max_wer_delta_points: float

    @classmethod
    def default(cls, precision: str, max_rel_dlogit: float | None = None, max_wer_delta_points: float | None = None):
        rel = TOLERANCES.get(precision, TOLERANCES["int8"])[0]
        wer = WER_DELTA_POINTS.get(precision, WER_DELTA_POINTS["int8"])
        return cls(rel if max_rel_dlogit is None else max_rel_dlogit,
                   wer if max_wer_delta_points is None else max_wer_delta_points)

    def limits(self) -> dict:
        return asdict(self)

    def judge(self, figures: dict) -> tuple[bool, list[str]]:
        """(passed, reasons it failed). WER is judged only where it was measured on a trained model."""
        if figures.get("error"):   # nothing measured (or the measurement failed): that is the reason
            return False, [figures["error"]]
        why = []
        rel = figures.get("rel_dlogit")
        if rel is None or not rel <= self.max_rel_dlogit:   # NaN fails too
            why.append(f"max |Δlogit| {figures.get('max_abs_dlogit', float('nan')):.3g} is "
                       f"{rel if rel is not None else float('nan'):.3g} of the logit scale > {self.max_rel_dlogit:g}")
        if figures.get("conformance_failed"):
            why.append(f"fails {figures['conformance_failed']} of {figures['conformance_cells']} conformance cells "
                       f"(first: {figures['conformance_first_failure']})")
        delta = figures.get("wer_delta_points")
        if delta is not None and figures.get("wer_judged") and not delta <= self.max_wer_delta_points:
            why.append(f"WER {delta:+.2f} points against FP32 > {self.max_wer_delta_points:g}")
        return not why, why
