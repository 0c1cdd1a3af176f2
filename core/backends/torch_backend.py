"""PyTorch eager backend: FP32/FP16/BF16 on CPU or CUDA, SDPA attention."""
from __future__ import annotations

import copy

import numpy as np

from ..errors import BackendUnavailableError
from .base import Backend

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
SPECS = ["torch:fp32:cpu", "torch:fp32:cuda", "torch:fp16:cuda", "torch:bf16:cuda"]


def cuda_available() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch not installed: pip install torch"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to PyTorch: run on an NVIDIA GPU with a CUDA build of torch"
    return True, ""


def available(spec) -> tuple[bool, str]:
    if spec.precision not in DTYPES:
        return False, "PyTorch runs fp32/fp16/bf16 only: INT8 and mixed run on ONNX Runtime or TensorRT"
    if spec.device not in ("cpu", "cuda"):
        return False, f"unknown PyTorch device '{spec.device}'"
    return cuda_available() if spec.device == "cuda" else (True, "")


def pinned_array(size: int, dtype=np.float32) -> np.ndarray:
    """Page-locked host memory seen as numpy: a copy from it to the GPU runs asynchronously."""
    import torch
    kind = torch.from_numpy(np.empty(0, dtype)).dtype
    return torch.empty(size, dtype=kind, pin_memory=True).numpy()   # the array keeps the tensor alive


def to_device(values: np.ndarray, device: str, dtype):
    """Host values -> a device tensor of `dtype`, copied as float32 (float16 values, served FP16 audio, as they are)
    and cast there: a cast on the host costs the host more than the cast costs the GPU, and a page-locked source
    (pinned_array) is then copied without the host waiting. On the CPU a float32 result may share the array's
    memory."""
    import torch
    values = np.ascontiguousarray(values, dtype=np.float16 if values.dtype == np.float16 else np.float32)
    return torch.from_numpy(values).to(device, non_blocking=True).to(dtype)


def to_host_async(out):
    """A CUDA tensor -> a callable that returns it as float32 numpy: the cast runs on the GPU and the copy into
    page-locked memory is queued behind the work that computes it, so the host waits only when the callable runs.
    The page-locked block comes from torch's caching host allocator, which reuses it only after the copy is done."""
    import torch
    on_gpu = out.float()
    host = torch.empty(on_gpu.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(on_gpu, non_blocking=True)
    done = torch.cuda.Event()
    done.record()

    def wait() -> np.ndarray:
        done.synchronize()
        return host.numpy()
    return wait


def make(spec, loaded, **_):
    return TorchBackend(spec, loaded)


class TorchBackend(Backend):
    runtime = "torch"

    def __init__(self, spec, loaded):
        super().__init__(spec)
        if spec.precision not in DTYPES:
            raise BackendUnavailableError(f"PyTorch backend has no precision '{spec.precision}'.",
                                          f"Use one of {', '.join(DTYPES)}; INT8/mixed run on ONNX Runtime or TensorRT.")
        self.loaded = loaded
        self.model = None

    def load(self):
        import torch
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("PyTorch cannot see a CUDA GPU.",
                                          "Run on a machine with an NVIDIA GPU and a CUDA build of torch, or use device 'cpu'.")
        self.dtype = getattr(torch, DTYPES[self.precision])
        if self.device == "cuda" and self.precision == "fp32":  # FP32 means FP32: cuDNN convs default to TF32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        model = copy.deepcopy(self.loaded.model)
        model.config._attn_implementation = "sdpa"
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.use_mask = self.loaded.uses_attention_mask
        return self

    def forward(self, input_values, attention_mask=None):
        """Torch tensors in, device logits out (no host copy): what GPU benchmarks time."""
        import torch
        with torch.inference_mode():
            return self.model(input_values, attention_mask=attention_mask if self.use_mask else None).logits

    def host_array(self, size, dtype=np.float32):
        return pinned_array(size, dtype) if self.device == "cuda" else super().host_array(size, dtype)

    def prepare(self, input_values, attention_mask=None):
        import torch
        x = to_device(input_values, self.device, self.dtype)
        mask = None if attention_mask is None else torch.from_numpy(attention_mask).to(self.device)
        return x, mask

    def run(self, prepared):
        return self.forward(*prepared)

    def to_host(self, out):
        return out.float().cpu().numpy()

    def to_host_async(self, out):
        return to_host_async(out) if self.device == "cuda" else super().to_host_async(out)

    def close(self):
        self.model = None
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
