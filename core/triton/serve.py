"""A real Triton Inference Server (PyTriton's bundled tritonserver) in front of any workbench backend.

    python -m core.triton.serve --model random:wav2vec2-tiny --backend ort:fp32:cpu --http-port 8000

Triton's dynamic batcher groups requests; the bound function pads them into one batch (with the attention
mask, so padding does not change the result), runs backend.logits once, and hands each request back only
the frames of its own audio. One inference callable (with its own backend) per Triton instance; with --gpus,
--instances of them on each chosen GPU (each backend loaded, warmed and called with its GPU as the current device)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

import numpy as np

from ..backends import option_argument
from .batching import preferred_sizes
from .pybackend import libpython_env
from .repo import AUDIO_DTYPES, FP16_AUDIO_RUNTIMES, audio_dtype
from .stages import StageTimes

MODEL_NAME = "asr"
AUDIO_NUMPY = {"FP32": np.float32, "FP16": np.float16}


def conv_frames(model_config, samples: int) -> int:
    n = samples
    for kernel, stride in zip(model_config.conv_kernel, model_config.conv_stride):
        n = (n - kernel) // stride + 1
    return int(n)


REUSE_BYTES = 64 << 20    # a served batch's host buffer is kept for the next batch up to this size


def make_infer(backend, loaded, stages=None) -> "BatchRunner":
    """requests (each a dict: input_values [n, samples], optional attention_mask) -> one result per request: a
    {'logits'} dict, or the ValueError saying why that request cannot be run (the others still are). `stages`
    (core.triton.stages.StageTimes) times the host-side steps of each batch."""
    return BatchRunner(backend, loaded, stages)


class BatchRunner:
    """A served batch in two halves: start() pads the requests into one batch, copies it to the device and queues
    the forward and the copy back; finish() waits for that copy and splits the logits per request. Servers call it
    whole (`runner(requests)`): one synchronous batch. The host buffer may be read by the device until finish()
    returns."""

    def __init__(self, backend, loaded, stages=None):
        from contextlib import nullcontext
        from ..transcribe import min_samples
        self.backend, self.loaded, self.stages = backend, loaded, stages
        self.cfg = loaded.model.config
        self.shortest = min_samples(self.cfg)
        self.use_mask = loaded.uses_attention_mask
        self.timed = stages or (lambda _stage: nullcontext())
        # one host buffer per instance, reused batch after batch: a fresh np.zeros pays its page faults on every batch
        # (bench/NOTES.md, twelfth session), and the backend's host_array is page-locked on a GPU, so the batch goes
        # to the device without the host waiting (safe to refill once finish() has returned: it waits for the GPU).
        # Batches above REUSE_BYTES get their own array, so one long request does not keep its memory for the
        # server's lifetime. FP16 audio stays FP16 up to the device for the runtimes whose to_device widens it
        # there: numpy's float16 casts cost many times a copy (bench/NOTES.md, eighteenth session). Other backends
        # get float32.
        self.half_ok = backend.spec.runtime in FP16_AUDIO_RUNTIMES
        self.buffers: dict = {}

    def __call__(self, requests):
        return self.finish(self.start(requests))

    def padded(self, rows: list[np.ndarray]) -> np.ndarray:
        dtype = np.float16 if self.half_ok and all(r.dtype == np.float16 for r in rows) else np.float32
        width = max(len(r) for r in rows)
        size = len(rows) * width
        if size * np.dtype(dtype).itemsize > REUSE_BYTES:
            values = np.empty((len(rows), width), dtype)
        else:
            key = np.dtype(dtype)
            if key not in self.buffers or self.buffers[key].size < size:
                self.buffers[key] = self.backend.host_array(size, dtype)
            values = self.buffers[key][:size].reshape(len(rows), width)   # contiguous: the backends take it as is
        for i, r in enumerate(rows):
            values[i, :len(r)] = r
            values[i, len(r):] = 0.0
        return values

    def launch(self, rows: list[np.ndarray], masks: list):
        """One padded batch to the device and through the model; returns the wait for its logits on the host."""
        with self.timed("pad"):
            values = self.padded(rows)
            width = values.shape[1]
            # a mask only where something is masked: an int64 mask of ones costs 8 bytes a sample to build, to
            # copy to the GPU and to sum, and says nothing the model does not assume without one
            mask = None
            if self.use_mask and any(m is not None or len(r) < width for r, m in zip(rows, masks)):
                mask = np.zeros((len(rows), width), np.int64)
                for i, (r, m) in enumerate(zip(rows, masks)):
                    mask[i, :len(r)] = 1 if m is None else m
        with self.timed("prepare"):   # host -> device
            prepared = self.backend.prepare(values, mask)
        with self.timed("run"):       # queues the forward and the copy back on a GPU
            return self.backend.to_host_async(self.backend.run(prepared))

    def check(self, req) -> tuple[np.ndarray, list]:
        """The request's rows and, per row, its mask (None: all ones, as when the request carries none)."""
        x = np.asarray(req["input_values"])
        if x.dtype != np.float16:   # FP16 audio (--input-dtype) is padded as it is (see `padded`)
            x = np.asarray(x, np.float32)
        if x.shape[-1] < self.shortest:
            raise ValueError(f"input_values has {x.shape[-1]} samples; this model needs at least {self.shortest} "
                             f"({self.shortest / self.loaded.sample_rate * 1e3:.0f} ms at {self.loaded.sample_rate} Hz)")
        m = req.get("attention_mask")
        if m is None:
            return x, [None] * x.shape[0]
        m = np.asarray(m, np.int64)
        if m.shape != x.shape:
            raise ValueError(f"attention_mask shape {list(m.shape)} differs from input_values {list(x.shape)}")
        return x, [None if row.all() else row for row in m]

    def start(self, requests) -> dict:
        """Checks, pads and launches the batch; what finish() needs. A request that fails its check gets its error."""
        rows, masks, owners, results = [], [], [], []
        for k, req in enumerate(requests):
            try:
                x, m = self.check(req)
            except ValueError as err:
                results.append(err)
                continue
            results.append(None)
            rows += list(x)
            masks += m
            owners += [k] * x.shape[0]
        # Models without an attention mask change their output when padded: run equal lengths together only.
        groups = {0: list(range(len(rows)))} if self.use_mask and rows else {}
        if not self.use_mask:
            for i, r in enumerate(rows):
                groups.setdefault(len(r), []).append(i)
        parts = []
        for idx in groups.values():
            if parts:   # the host buffer is refilled: the previous group must have left it
                done = parts[-1][1]()
                parts[-1] = (parts[-1][0], lambda done=done: done)
            parts.append((idx, self.launch([rows[i] for i in idx], [masks[i] for i in idx])))
        return {"requests": requests, "results": results, "owners": owners, "parts": parts, "rows": len(rows)}

    def finish(self, started: dict) -> list:
        out: list = [None] * started["rows"]
        with self.timed("to_host"):   # waits for the GPU
            for idx, wait in started["parts"]:
                logits = wait()
                for j, i in enumerate(idx):
                    out[i] = logits[j]
        results = started["results"]
        with self.timed("split"):
            mine: dict[int, list] = {}
            for i, k in enumerate(started["owners"]):
                mine.setdefault(k, []).append(out[i])
            for k, req in enumerate(started["requests"]):
                if results[k] is None:
                    frames = conv_frames(self.cfg, np.shape(req["input_values"])[-1])  # each request: its own length
                    own = [row[:frames] for row in mine[k]]
                    # one row (the usual request): a view of the batch's logits, contiguous as a leading slice is
                    results[k] = {"logits": np.ascontiguousarray(own[0][None] if len(own) == 1 else np.stack(own),
                                                                 np.float32)}
        if self.stages is not None:
            self.stages.batch_done()
        return results


def pytriton_infer(infer):
    """PyTriton's callable: Request objects in, dicts out; one bad request fails its batch (PyTriton answers a
    batch with one error)."""
    def call(requests):
        results = infer([r.data for r in requests])
        bad = next((r for r in results if isinstance(r, Exception)), None)
        if bad is not None:
            raise bad
        return results
    return call


PLACEABLE = ("torch", "fast")   # runtimes that put their work on the current CUDA device ("cuda" = the current one)


def devices(backend: str, gpus) -> list[int | None]:
    """The GPU of each instance group: [None] (the backend's own device) without --gpus, else the chosen indices.
    ONNX Runtime and TensorRT backends open GPU 0 whatever the current device is, so they are refused elsewhere."""
    from ..backends import BackendSpec
    from ..backends.base import on_gpu
    from .gpus import ALL, GpuSelectionError, parse_gpus, visible_gpus
    if gpus is None:
        return [None]
    spec = BackendSpec.parse(backend)
    if not on_gpu(spec.device):
        raise GpuSelectionError(f"--gpus places GPU instances, but {spec} runs on '{spec.device}'.",
                                "Use a GPU backend (fast:fp16:cuda, torch:fp16:cuda), or leave --gpus out.")
    count = visible_gpus()
    chosen = parse_gpus(gpus, available=count)
    ids = list(range(count)) if chosen == ALL else list(chosen)
    if not ids:
        raise GpuSelectionError("--gpus all: no GPU is visible to this process.", "Check nvidia-smi and CUDA_VISIBLE_DEVICES.")
    if spec.runtime not in PLACEABLE and ids != [0]:
        raise GpuSelectionError(f"{spec.runtime} backends always open GPU 0, so they cannot be spread over GPUs "
                                f"{ids} in one server.", f"Serve {', '.join(f'{r}:…:cuda' for r in PLACEABLE)} over "
                                "several GPUs, or one server per GPU with CUDA_VISIBLE_DEVICES set for each.")
    return ids


def placed(infer, index: int | None):
    """The inference callable with its GPU current: PyTriton calls each instance from its own thread, and the
    current CUDA device is per thread."""
    if index is None:
        return infer
    from .gpus import on_device

    def on_gpu(requests):
        with on_device(index):
            return infer(requests)
    return on_gpu


def backend_options(args) -> dict:
    """The keyword options each instance's backend is made with: --backend-option over the serving defaults. For
    the fast backend that is a batch bucket for every size up to --max-batch (its graphs come from the compiles of
    its default dynamic batch and length): the batcher forms batches of any size (5.4 requests on average at
    concurrency 16, max batch 16), which the default buckets (1, 2, 4, 8) padded to 8 rows or split into two
    replays. On an H200 that change, with one CPU thread per GPU instance, took Triton from 53 % to 64 % of
    in-process (bench/NOTES.md)."""
    options = {}
    if args.backend.startswith("fast:"):
        options = {"batch_buckets": list(range(1, args.max_batch + 1))}
    if args.threads and args.backend.startswith("ort"):
        options["threads"] = args.threads
    options.update(args.backend_option or [])
    return options


def serve_python_backend(args, loaded, gpus, options: dict) -> int:
    """Each instance a Triton Python-backend process (core.triton.pybackend): on the chosen GPUs, on the backend's
    GPU (the first one) without --gpus, or on the CPU for CPU backends."""
    from ..backends import BackendSpec
    from ..backends.base import on_gpu
    from . import pybackend
    from .repo import RepoOptions
    gpu = on_gpu(BackendSpec.parse(args.backend).device)
    opts = RepoOptions(max_batch=args.max_batch, preferred=tuple(args.preferred),
                       max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
                       kind="gpu" if gpu else "cpu", gpus=(tuple(g for g in gpus if g is not None) or (0,)) if gpu else None)
    return pybackend.serve(args, loaded, opts, options)


def _interrupt(*_):
    raise KeyboardInterrupt  # Triton.serve() treats it as "stop": server and workspace are cleaned up


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.triton.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--backend", default="ort:fp32:cpu", help="any workbench backend spec")
    p.add_argument("--model-name", default=MODEL_NAME, help="name the model is served under")
    p.add_argument("--address", default="127.0.0.1", help="bind address (0.0.0.0 exposes it to the network)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--preferred", type=int, nargs="*", default=[])
    p.add_argument("--max-queue-delay-us", type=int, default=500)
    p.add_argument("--instances", type=int, default=1, help="model instances (one backend each)")
    p.add_argument("--gpus", nargs="+", default=None, metavar="GPU",
                   help="spread instances over GPUs: 'all' or indices (e.g. 0 1); --instances on each "
                        "(torch and fast backends; default: the backend's own device)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per ONNX Runtime instance")
    p.add_argument("--backend-option", type=option_argument, action="append", metavar="KEY=VALUE",
                   help="a keyword option of each instance's backend, VALUE read as JSON where it parses (repeatable)")
    p.add_argument("--python-backend", action="store_true",
                   help="serve through Triton's own Python backend: each instance its own process (one interpreter "
                        "per instance and GPU) instead of PyTriton's callables in this process")
    p.add_argument("--input-dtype", choices=AUDIO_DTYPES, default="auto",
                   help="type of the served input_values; auto (the default): fp16 for fast and torch fp16 backends "
                        "(they cast the audio to FP16 first, so outputs do not change and requests carry half the "
                        "bytes), else fp32; docs/triton.md says what it measured")
    p.add_argument("--warmup-seconds", type=float, default=None,
                   help="before serving, run every batch size up to --max-batch at this audio length once "
                        "(compiles/captures GPU graphs so the first requests do not time out)")
    return p


def warm_up(backend, loaded, seconds: float, max_batch: int) -> list[int]:
    """Forwards per batch bucket of the backend up to max_batch (per power of two for backends without buckets),
    and at max_batch, at `seconds` of audio; returns the sizes run.
    With an attention mask, a second forward has one row shorter: a batch padded by the server (the fast
    backend keeps a masked and a mask-free graph per shape) must not compile on a live request either."""
    rng = np.random.default_rng(0)
    n = max(2, int(seconds * loaded.sample_rate))
    buckets = getattr(backend, "batch_buckets", None) or [2 ** k for k in range(max_batch.bit_length() + 1)]
    sizes = sorted({min(b, max_batch) for b in buckets} | {max_batch})
    for b in reversed(sizes):   # largest first, so smaller captures reuse the shared graph pool's blocks
        x = (0.1 * rng.standard_normal((b, n))).astype(np.float32)
        if not loaded.uses_attention_mask:
            backend.logits(x)
            continue
        mask = np.ones((b, n), np.int64)
        backend.logits(x, mask)
        mask[-1, n // 2:] = 0
        backend.logits(x, mask)
    return sizes


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from ..hostmem import keep_freed_memory
    keep_freed_memory()   # this process (PyTriton's callables) and, through os.environ, tritonserver and its stubs
    os.environ.update(libpython_env())  # PyTriton passes os.environ on to tritonserver and the stub
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

    from ..backends import make_backend
    from ..errors import WorkbenchError
    from ..models import load_model

    if args.instances < 1 or args.max_batch < 1:
        print("error: --instances and --max-batch must be at least 1", file=sys.stderr)
        return 2
    from .gpus import on_device
    try:
        args.preferred = list(preferred_sizes(args.preferred, args.max_batch))
        args.input_dtype = audio_dtype(args.input_dtype, args.backend)   # FP32 or FP16 from here on
        gpus = devices(args.backend, args.gpus)
        loaded = load_model(args.model)
        options = backend_options(args)
        print(f"BACKEND {args.backend} with options {options}", flush=True)
        if args.python_backend:
            return serve_python_backend(args, loaded, gpus, options)
        backends, where = [], []
        for gpu in gpus:
            for _ in range(args.instances):
                with on_device(gpu):   # loaded, warmed and later called on its own GPU
                    backends.append(make_backend(args.backend, loaded, **options).load())
                where.append(gpu)
        if gpus != [None]:
            print(f"PLACED {args.instances} instance(s) on each of GPUs {gpus}", flush=True)
        for b, gpu in zip(backends, where) if args.warmup_seconds else []:
            t0 = time.perf_counter()
            with on_device(gpu):
                sizes = warm_up(b, loaded, args.warmup_seconds, args.max_batch)
            print(f"WARMED batch sizes {sizes} at {args.warmup_seconds:g} s in {time.perf_counter() - t0:.1f} s"
                  + ("" if gpu is None else f" on GPU {gpu}"), flush=True)
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    inputs = [Tensor(name="input_values", dtype=AUDIO_NUMPY[args.input_dtype], shape=(-1,))]
    if loaded.uses_attention_mask:
        inputs.append(Tensor(name="attention_mask", dtype=np.int64, shape=(-1,), optional=True))
    outputs = [Tensor(name="logits", dtype=np.float32, shape=(-1, int(loaded.model.config.vocab_size)))]
    batcher = DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us,
                             preferred_batch_size=args.preferred or None)
    config = TritonConfig(http_address=args.address, grpc_address=args.address, metrics_address=args.address,
                          http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                          exit_timeout_secs=5, log_verbose=0)
    # Statistics stay readable without a token (the load sweep reads them); model loading stays protected.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    signal.signal(signal.SIGTERM, _interrupt)
    with Triton(config=config, security_config=security) as triton:
        stages = [StageTimes(f"instance {i} (GPU {g})" if g is not None else f"instance {i}") for i, g in enumerate(where)]
        triton.bind(model_name=args.model_name, infer_func=[placed(pytriton_infer(make_infer(b, loaded, t)), g)
                                                            for b, g, t in zip(backends, where, stages)],
                    inputs=inputs, outputs=outputs, config=ModelConfig(max_batch_size=args.max_batch, batcher=batcher))
        print(f"SERVING {args.model_name} ({loaded.label}) on {args.backend}, input_values {args.input_dtype}: http {args.address}:{args.http_port} "
              f"grpc {args.address}:{args.grpc_port} metrics {args.address}:{args.metrics_port}", flush=True)
        triton.serve()
    for t in stages:
        t.flush()
    for b in backends:
        b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
