"""The one interface every backend implements, and how backends are named."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16", "mixed", "int8", "int4w", "int8w", "fp8")
GPU_DEVICES = ("cuda", "tensorrt", "trtrtx")   # devices whose work is timed with CUDA events


def on_gpu(device: str) -> bool:
    return device in GPU_DEVICES


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
        self.options: dict = {}   # the keyword options it was made with (make_backend): recorded with its results

    def row_fields(self) -> dict:
        """What names this backend in a result row: its spec's parts and, where any were given, its options (a
        dynamic_batch run is not the default one)."""
        return {"backend": self.name, "runtime": self.spec.runtime, "precision": self.precision,
                "device": self.device, **({"backend_options": self.options} if self.options else {})}

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

    def host_array(self, size: int, dtype=np.float32) -> np.ndarray:
        """A host array of `size` values (float32; float16 for FP16 audio where prepare() takes it) that prepare()
        takes fastest, for a caller that fills one batch after another (a served batch). Plain memory here;
        page-locked on a torch CUDA device, whose prepare() then copies it asynchronously: the caller must not
        rewrite it before that batch's to_host() (or to_host_async()'s wait) has returned."""
        return np.empty(size, dtype)

    def prepare(self, input_values: np.ndarray, attention_mask: np.ndarray | None = None):
        """Host arrays -> this backend's inputs, already on its device (copied once, outside compute timing)."""
        return input_values, attention_mask

    @abstractmethod
    def run(self, prepared):
        """Prepared inputs -> logits left where the backend computed them (no host copy): what the `compute`
        scope times. The result may live in a reused buffer: valid until the next run()."""

    def to_host(self, out) -> np.ndarray:
        """run()'s result -> float32 numpy logits [batch, frames, vocab]."""
        return np.asarray(out, dtype=np.float32)

    def to_host_async(self, out):
        """Starts run()'s result on its way to the host and returns a callable that waits for it and returns what
        to_host() would (a served batch, core.triton.serve.BatchRunner, waits for it in its finish()).
        Here the copy is made at once, and is a copy: to_host() may return a view of a buffer that the next run()
        reuses (the fast backend's graph outputs). torch's CUDA backends queue the copy behind the GPU work instead."""
        result = np.array(self.to_host(out), dtype=np.float32)
        return lambda: result

    def logits(self, input_values: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """float32 [batch, samples] (normalised by the processor) -> float32 logits [batch, frames, vocab]."""
        return self.to_host(self.run(self.prepare(input_values, attention_mask)))

    def server_pids(self) -> list[int]:
        """Processes other than this one that do the work (a local inference server), for memory tracking."""
        return []

    def close(self) -> None:
        """Free what load() took."""

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()
