"""The one interface every backend implements, and how backends are named."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16", "mixed", "int8")


@dataclass(frozen=True)
class BackendSpec:
    """`runtime:precision:device`, e.g. `torch:fp16:cuda`, `ort:int8:cpu`, `trt:fp16:cuda`."""
    runtime: str
    precision: str = "fp32"
    device: str = "cpu"

    @classmethod
    def parse(cls, text: str) -> "BackendSpec":
        parts = text.strip().split(":")
        if not 1 <= len(parts) <= 3 or not parts[0]:
            raise ValueError(f"backend spec '{text}' is not runtime[:precision[:device]]")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.runtime}:{self.precision}:{self.device}"


class Backend(ABC):
    """Loads a model for one runtime/precision/device and turns a batch of audio into logits."""

    runtime = "?"

    def __init__(self, spec: BackendSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return str(self.spec)

    @property
    def precision(self) -> str:
        return self.spec.precision

    @property
    def device(self) -> str:
        return self.spec.device

    @abstractmethod
    def load(self) -> "Backend":
        """Allocate sessions/engines; heavy work happens here, not in __init__."""

    @abstractmethod
    def logits(self, input_values: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """float32 [batch, samples] (normalised by the processor) -> float32 logits [batch, frames, vocab]."""

    def close(self) -> None:
        """Free what load() took."""

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()
