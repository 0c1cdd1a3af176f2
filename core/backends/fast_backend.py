"""Fast GPU backend for wav2vec2-style CTC models: the same function as the Hugging Face model,
rewritten for speed (runtime "fast").

What it changes, each an exact reformulation (tests check them against the original on CPU):
  * weight norm of the positional conv folded into a plain weight once at load time (the
    parametrization recomputes the norm on every call);
  * Q, K and V projections fused into one matrix product; SDPA attention;
  * the feature encoder's convolutions channels-last, over the batch laid end to end (conv_flat);
  * padding is expressed by per-row *lengths*, from which every mask is derived inside the graph,
    so inputs padded to a fixed bucket give the same logits on the real frames as unpadded inputs;
    inputs that fill their bucket exactly run a mask-free variant (attention's mask-free kernels).
One approximation, in fp16 only: the first feed-forward GEMM applies bias + GELU in cuBLASLt's epilogue, whose
GELU is the tanh form (gelu_epilogue; checked against FP32 on the labelled set by bench/gpu_w1.py).
And the speed machinery on CUDA:
  * FP16/BF16 weights (layer norms and attention softmax still accumulate in FP32);
  * optional torch.compile (static shapes), its caches (Inductor's FX graph and autotune caches, Triton's kernels)
    persisted under artifacts/compile-cache, so a new process compiles a shape from cache (H200: 4 s a graph
    instead of 18, bench/NOTES.md);
  * one CUDA graph per (batch bucket, length bucket, masked/mask-free), captured lazily on first use, so a replay is
    a single launch instead of hundreds. Inputs longer than the largest bucket, or larger batches
    than the largest batch bucket, run eagerly (same code, no graph): any length works.
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import BackendUnavailableError
from .base import Backend
from .shape_cache import FORMS as AHEAD_OF_TIME, precompile_supported, shape_key
from .torch_backend import pinned_array, to_device, to_host_async

SPECS = ["fast:fp16:cuda", "fast:bf16:cuda", "fast:fp32:cuda"]
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
BUCKETS_S = (1, 2, 3, 5, 8, 12, 16, 20)   # audio seconds; transcribe() windows are at most 20 s
BATCH_BUCKETS = (1, 2, 4, 8)


def available(spec) -> tuple[bool, str]:
    if spec.precision not in DTYPES:
        return False, f"the fast backend runs fp16/bf16/fp32 only, not '{spec.precision}'"
    if spec.device == "cpu":  # a reference mode for tests: the same buckets and buffers, graphs emulated
        return (True, "") if spec.precision == "fp32" else (False, "on the CPU the fast backend runs fp32 only")
    if spec.device != "cuda":
        return False, f"the fast backend runs on 'cuda' (or 'cpu' for checks), not '{spec.device}'"
    try:
        import torch
    except ImportError:
        return False, "torch not installed: pip install torch"
    if not torch.cuda.is_available():
        return False, ("no CUDA GPU visible to PyTorch: CUDA graphs and FP16 kernels need an NVIDIA GPU "
                       "and a CUDA build of torch")
    if spec.precision == "bf16" and not torch.cuda.is_bf16_supported():
        return False, "this GPU has no bf16 support: use fast:fp16:cuda"
    return True, ""


def make(spec, loaded, **options):
    return FastBackend(spec, loaded, **options)


def use_compile_cache():
    """Inductor's and Triton's on-disk caches under artifacts/compile-cache (unless the environment already
    names them), so compiled kernels outlive /tmp and the process: a new process compiles from cache."""
    import os
    from ..paths import artifacts_dir
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    root = artifacts_dir() / "compile-cache"
    # importing torch._dynamo already writes Inductor's default (/tmp/torchinductor_<user>) into the environment:
    # only a directory the user chose is kept
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, os.path.abspath(default_cache_dir())):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    return root


# ---------------------------------------------------------------- bucketing (pure, CPU-testable)

def choose_bucket(n: int, buckets) -> int | None:
    """The smallest bucket that holds n, or None when n is larger than every bucket."""
    fits = [b for b in sorted(buckets) if b >= n]
    return fits[0] if fits else None


# ---------------------------------------------------------------- the backend

class _Replay:
    """A CUDA graph's stand-in on the CPU: replay() recomputes into the same static output buffer."""

    def __init__(self, fn):
        self.replay = fn


class FastBackend(Backend):
    """Options:
    compile: None | "default" | "max-autotune-no-cudagraphs" | "aoti" | "precompile" (the last two: an artifact per
        bucket shape, see shape_cache; aoti on the CPU only; precompile needs torch.compile's aot_compile, which the
        GPU machine's torch 2.11 lacks, so it has run on the CPU only);
    compile_scope: "whole" (one graph per shape) | "layer" (fast_module.compile_regions: Dynamo traces one layer
        instead of 24, the front and the head apart) | "encoder" (the same with the front compiled by its parts, so
        a symbolic length reaches Dynamo as one fresh symbol per part);
    dynamic_batch: the batch dimension compiled as a symbol (torch.compile or precompile), so each length
        bucket and mask variant compiles twice (batch 1, which torch specializes, and every batch from 2 up) instead
        of once per batch bucket; CUDA graphs are still captured per batch bucket;
    dynamic_time: the length dimension compiled as a symbol too (compile="default" only), so all length buckets share
        their compiles. Inductor's coalescing tiling analysis is off for it (it asserted on symbolic sizes on the
        H200, fourth session);
    the defaults with compile="default": scope "encoder" with dynamic batch and time, so every bucket's 64 graphs
        come from 18 small compiles (H200, eleventh session, bench/NOTES.md: 26.6 s from a warm compile cache against
        45.9 s for the whole module compiled dynamic, and one compile of 5-18 s per bucket shape when static; W1/W2
        1.437/3.795 ms against 1.422/3.820 static in the same run; the conformance matrix and demo WER unchanged);
        with any other compile mode: "whole", static;
    graphs: CUDA graphs (default on for CUDA);
    buckets_s (length buckets in seconds), batch_buckets, pad (pad to buckets even without graphs);
    conv: "flat" | "hybrid" | "gemm" | "cudnn", how the convolutions run (fast_module.build_module);
    mask_free: inputs that fill their bucket run the mask-free variant (False forces masks, for comparison);
    gelu_epilogue: see fast_module.build_module; None: on for fp16 only (H200 run 12, bench/NOTES.md: fp16 W2 3.88 ->
        3.70 ms with all 36 demo transcripts unchanged; in bf16 it changed one transcript, +0.51 WER points)."""
    runtime = "fast"

    def __init__(self, spec, loaded, compile: str | None = "default", graphs: bool | None = None,
                 buckets_s=BUCKETS_S, batch_buckets=BATCH_BUCKETS, pad: bool | None = None, conv: str = "flat",
                 mask_free: bool = True, gelu_epilogue: bool | None = None, compile_scope: str | None = None,
                 dynamic_batch: bool | None = None, dynamic_time: bool | None = None):
        super().__init__(spec)
        by_region = compile == "default"   # the defaults above: one compiled graph per part for every shape
        compile_scope = compile_scope or ("encoder" if by_region else "whole")
        dynamic_batch = by_region if dynamic_batch is None else dynamic_batch
        dynamic_time = by_region if dynamic_time is None else dynamic_time
        # refused before anything loads, on any machine: a segfault would take the caller (the dashboard) with it
        if compile == "aoti" and spec.device == "cuda":
            raise BackendUnavailableError(
                "compile='aoti' does not run on CUDA here: loading any AOTInductor package segfaults the process "
                "(torch 2.11.0+cu130 on an H200, 2026-12-02, even for a two-layer module; bench/aoti_load_probe.py).",
                "Use the default compile (torch.compile with its persisted cache); aoti runs on the CPU.")
        ok, why = available(spec)
        if not ok:
            raise BackendUnavailableError(f"Backend {spec} is not available: {why}.", "Pick another backend.")
        if compile == "precompile" and not precompile_supported():
            import torch
            raise BackendUnavailableError(
                f"compile='precompile' needs torch.compile's aot_compile, which torch {torch.__version__} lacks.",
                "Use the default compile (torch.compile with its persisted cache), or a newer torch (2.13 has it).")
        self.loaded = loaded
        cuda = spec.device == "cuda"
        if compile not in (None, "default", "max-autotune-no-cudagraphs", *AHEAD_OF_TIME):
            raise BackendUnavailableError(f"Unknown compile mode '{compile}'.",
                                          "Use default, max-autotune-no-cudagraphs, aoti, precompile or none.")
        if compile_scope not in ("whole", "layer", "encoder"):
            raise BackendUnavailableError(f"Unknown compile scope '{compile_scope}'.", "Use whole, layer or encoder.")
        if compile_scope != "whole" and compile in AHEAD_OF_TIME:
            raise BackendUnavailableError(
                f"compile_scope='{compile_scope}' applies to torch.compile, not to compile='{compile}'.",
                "Leave compile_scope at 'whole' for ahead-of-time artifacts.")
        if dynamic_batch and compile == "aoti":
            raise BackendUnavailableError(
                "dynamic_batch applies to torch.compile and compile='precompile', not to compile='aoti'.",
                "Use compile='default' or 'precompile', or leave dynamic_batch off.")
        self.compile_scope = compile_scope
        if dynamic_time and compile != "default":
            raise BackendUnavailableError(
                "dynamic_time applies to compile='default' only.",
                "Use compile='default', or leave dynamic_time off.")
        self.dynamic_batch = dynamic_batch
        self.dynamic_time = dynamic_time
        # torch.compile only on CUDA (the CPU is the tests' reference mode); the ahead-of-time forms on both (aoti:
        # CPU only, above), so their build-and-load path is tested on the CPU too
        self.compile_mode = compile if cuda or compile in AHEAD_OF_TIME else None
        # on the CPU (the reference mode for tests) graphs are emulated: same buckets, static buffers and replay
        self.use_graphs = True if graphs is None else graphs
        self.pad = self.use_graphs if pad is None else pad
        rate = loaded.sample_rate
        self.buckets = tuple(int(round(s * rate)) for s in sorted(buckets_s))
        self.batch_buckets = tuple(sorted(batch_buckets))
        self.use_mask = loaded.uses_attention_mask
        self.conv = conv
        self.mask_free = mask_free
        self.gelu_epilogue = spec.precision == "fp16" if gelu_epilogue is None else gelu_epilogue
        self.module = None
        self.graphs: dict = {}
        self.stats = {"graph": 0, "eager": 0}

    def load(self):
        import torch
        self.dtype = getattr(torch, DTYPES[self.precision])
        from .fast_module import build_module, compile_regions, conv_out_length
        self.conv_out_length = conv_out_length   # for forward(), which should not import on every call
        module = build_module(self.loaded.model, self.conv, self.gelu_epilogue).to(device=self.device, dtype=self.dtype)
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module
        self.call = module
        self.packages: dict = {}   # aoti/precompile: one artifact per bucket shape (_shape_call); others run eagerly
        if self.compile_mode:
            use_compile_cache()
        if self.compile_mode not in (None, *AHEAD_OF_TIME):
            mode = None if self.compile_mode == "default" else self.compile_mode
            import torch._dynamo as dynamo
            for knob in ("recompile_limit", "cache_size_limit"):  # one compile per bucket shape
                if hasattr(dynamo.config, knob):
                    setattr(dynamo.config, knob, max(getattr(dynamo.config, knob), 512))
            # a symbolic length tripped an assertion in the coalescing analysis (H200, fourth session)
            options = {"triton.coalesce_tiling_analysis": False} if self.dynamic_time else None
            self.call = (compile_regions(module, mode, options, self.dynamic_batch, self.dynamic_time,
                                         front=self.compile_scope == "layer")
                         if self.compile_scope != "whole" else
                         torch.compile(module, mode=mode, options=options, dynamic=False, fullgraph=True))
        if self.device == "cuda" and self.precision == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here, not TF32
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs and self.device == "cuda" else None
        self.capture_stream = None   # made by the first _capture
        return self

    def capture_all(self) -> int:
        """Compile and capture every (batch bucket, length bucket, masked/mask-free) graph now instead of on
        first use: a server's or a long transcription's first requests then pay nothing. Returns how many."""
        import torch
        # largest first: the graphs share one memory pool, and a smaller capture can split the blocks a larger
        # one freed, where each capture in growing order needs larger blocks than any freed before
        with torch.inference_mode():   # as forward() captures: compiled under the grad mode they are called in
            for bb in sorted(self.batch_buckets, reverse=True):
                for tb in sorted(self.buckets, reverse=True):
                    for full in ((True, False) if self.mask_free else (False,)):
                        if (bb, tb, full) not in self.graphs:
                            self._capture(bb, tb, full)
        return len(self.graphs)

    def lengths_of(self, input_values, attention_mask):
        """Per-row real samples: the mask's sum for models that take one, else the full (padded) width,
        which is what the Hugging Face model sees when it is given no mask."""
        b, t = input_values.shape
        if attention_mask is None or not self.use_mask:
            return np.full(b, t, np.int64)
        return np.asarray(attention_mask).sum(-1).astype(np.int64)

    def forward(self, values, lengths):
        """values [B,T] (a device tensor in the backend's dtype) and lengths [B] (int64 samples of real audio,
        a host numpy array: known on the host, the mask-free graph is picked without a device sync) -> device
        logits [B, frames(T), vocab]. A graph's output buffer is reused by its next replay: copy it if kept."""
        import torch
        b, t = values.shape
        lengths = np.asarray(lengths, dtype=np.int64)
        with torch.inference_mode():
            tb = choose_bucket(t, self.buckets) if self.pad else t
            bb = choose_bucket(b, self.batch_buckets) if self.pad else b
            if tb is None or bb is None:
                if bb is None and b > self.batch_buckets[-1] and tb is not None:  # split big batches
                    # each piece is copied out before the next replay overwrites its graph's output buffer
                    step = self.batch_buckets[-1]
                    return torch.cat([self.forward(values[i:i + step], lengths[i:i + step]).clone()
                                      for i in range(0, b, step)])
                self.stats["eager"] += 1
                full = self.mask_free and bool((lengths == t).all())
                return self.module(values, self._device(lengths), full=full)
            frames = int(self.conv_out_length(t, self.loaded.model.config))
            padded = np.full(bb, tb, np.int64)   # padded rows get the full length: finite, and dropped below
            padded[:b] = lengths
            full = self.mask_free and bool((padded == tb).all())    # every row real audio to the end
            if not self.use_graphs:
                x = values
                if (b, t) != (bb, tb):
                    x = torch.zeros((bb, tb), dtype=values.dtype, device=values.device)
                    x[:b, :t] = values
                self.stats["eager"] += 1
                n = self._device(padded)
                return self._shape_call(x, n, full)(x, n, full=full)[:b, :frames]
            g, x_static, n_static, out = self.graphs.get((bb, tb, full)) or self._capture(bb, tb, full)
            if (b, t) != (bb, tb):
                x_static.zero_()
            x_static[:b, :t].copy_(values)
            if not full:  # a full graph was captured with every length at tb
                # non_blocking: a blocking copy from pageable memory waits for the stream to drain, which would stall
                # a served batch behind the one still on the GPU; CUDA stages a pageable source before returning
                n_static.copy_(torch.from_numpy(padded), non_blocking=True)
            g.replay()
            if not isinstance(g, torch.cuda.CUDAGraph):   # emulated: model the shared pool's reuse (see _capture)
                for key, other in self.graphs.items():
                    if key != (bb, tb, full):
                        other[3].fill_(float("nan"))
            self.stats["graph"] += 1
            return out[:b, :frames]

    def _shape_call(self, x, n, full: bool):
        """What computes a bucket shape: the (compiled) module, or with compile="aoti"/"precompile" this shape's
        artifact (core.backends.shape_cache: built once, called with this module's weights). With dynamic_batch,
        batches from 2 up are marked dynamic first, so they share one compiled graph; with dynamic_time, lengths."""
        dynamic = self.dynamic_batch and self.compile_mode is not None and x.shape[0] > 1
        if self.compile_mode not in AHEAD_OF_TIME:
            if self.compile_mode is not None:
                import torch._dynamo
                if dynamic:
                    torch._dynamo.mark_dynamic(x, 0)
                    torch._dynamo.mark_dynamic(n, 0)
                if self.dynamic_time:
                    torch._dynamo.mark_dynamic(x, 1)
            return self.call
        shape = (None if dynamic else x.shape[0], x.shape[1], full)
        if shape not in self.packages:
            from ..paths import artifacts_dir
            config = {k: v for k, v in self.loaded.model.config.to_dict().items()
                      if not k.startswith("_") and k != "transformers_version"}
            options = {"conv": self.conv, "gelu_epilogue": self.gelu_epilogue}
            key = shape_key(config, options, self.dtype, x.device, (x, n), {"full": full}, dynamic_batch=dynamic)
            runner, folder = AHEAD_OF_TIME[self.compile_mode]
            self.packages[shape] = runner(self.module, (x, n), {"full": full}, key,
                                          artifacts_dir() / "compile-cache" / folder, self.stats, dynamic)
        return self.packages[shape]

    def _device(self, lengths):
        import torch
        return torch.from_numpy(lengths).to(self.device)

    def _capture(self, bb, tb, full):
        """A graph for one (batch bucket, length bucket, mask-free) shape with its static input, lengths and
        output buffers. Graphs share one memory pool, so a replay may overwrite another graph's output: a result
        is only valid until the next replay of any graph. On the CPU the graph is emulated (_Replay) with the
        same buffers, and a replay poisons every other graph's output with NaN, so a test on the CPU fails where
        a CUDA run would return overwritten logits."""
        import torch
        x = (0.1 * torch.randn((bb, tb), device=self.device)).to(self.dtype)  # never zeros
        n = torch.full((bb,), tb, dtype=torch.int64, device=self.device)
        call = self._shape_call(x, n, full)
        if self.device != "cuda":
            out = call(x, n, full=full).clone()
            self.graphs[(bb, tb, full)] = (_Replay(lambda: out.copy_(call(x, n, full=full))), x, n, out)
            return self.graphs[(bb, tb, full)]
        # One capture stream per backend, made at its first capture on the GPU current then (as for every call).
        # The caching allocator gives a freed pool block only to allocations on the stream it was used on: with a
        # new stream per capture no graph could reuse another's blocks. torch.cuda.graph's own default stream is
        # made once per process, on the GPU current at its first use: wrong for a second backend on another GPU.
        if self.capture_stream is None:
            self.capture_stream = torch.cuda.Stream()
        stream = self.capture_stream
        t0 = time.perf_counter()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # compiles (if torch.compile) and lets cuBLAS/cuDNN pick kernels
                call(x, n, full=full)
        torch.cuda.current_stream().wait_stream(stream)
        t1 = time.perf_counter()
        # capture_begin/end rather than torch.cuda.graph, whose entry synchronizes the whole device and empties the
        # allocator's caches at every capture (stalling any other backend's work on this GPU). The capture follows
        # the warm-ups on the same stream, so it is ordered after them without a sync.
        g = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):
            g.capture_begin(pool=self.pool)
            try:
                out = call(x, n, full=full)
            finally:
                g.capture_end()
        self.graphs[(bb, tb, full)] = (g, x, n, out)
        # host seconds, summed over captures: where a cold start goes besides the compiles (bench/gpu_coldstart.py)
        self.stats["warmup_s"] = self.stats.get("warmup_s", 0.0) + t1 - t0
        self.stats["capture_s"] = self.stats.get("capture_s", 0.0) + time.perf_counter() - t1
        return self.graphs[(bb, tb, full)]

    def tensors(self, input_values, attention_mask=None):
        """numpy -> what forward() takes: the values as a device tensor, the lengths on the host."""
        return to_device(input_values, self.device, self.dtype), self.lengths_of(input_values, attention_mask)

    def host_array(self, size, dtype=np.float32):
        return pinned_array(size, dtype) if self.device == "cuda" else super().host_array(size, dtype)

    def prepare(self, input_values, attention_mask=None):
        return self.tensors(input_values, attention_mask)

    def run(self, prepared):
        return self.forward(*prepared)

    def to_host(self, out):
        return out.float().cpu().numpy()

    def to_host_async(self, out):
        return to_host_async(out) if self.device == "cuda" else super().to_host_async(out)

    def close(self):
        self.graphs.clear()
        self.module = self.call = None
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


__all__ = ["SPECS", "available", "make", "FastBackend", "choose_bucket"]
