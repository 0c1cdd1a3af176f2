"""Triton Inference Server: container model repositories, a local server (PyTriton), and load sweeps.

CLI: `triton-repo`, `serve`, `sweep` (see `python -m core <command> --help`)."""
from __future__ import annotations

import sys


def cmd_repo(args):
    from ..cli import _model
    from .repo import RepoOptions, build_repo
    opts = RepoOptions(max_batch=args.max_batch, preferred=tuple(args.preferred), max_queue_delay_us=args.max_queue_delay_us,
                       instances=args.instances, kind=args.kind, trt_accelerator=args.trt_accelerator)
    path = build_repo(_model(args), args.backend, name=args.model_name, opts=opts, engine=args.engine)
    print(path)
    print((path / args.model_name / "config.pbtxt").read_text(encoding="utf-8"))


def cmd_serve(args):
    from . import server
    if args.stop:
        print("stopped" if server.stop(args.name) else f"no running server named '{args.name}'")
        return
    if args.status:
        info = server.read_state(args.name)
        print(f"running: pid {info.pid}, http {info.url('http')}, grpc {info.url('grpc')}, model '{info.model_name}' "
              f"({info.backend}), log {info.log}" if info else f"no running server named '{args.name}'")
        return
    print(f"starting Triton (PyTriton) for {args.model or 'the default model'} on {args.backend} ...", file=sys.stderr)
    info = server.start(args.model, args.backend, name=args.name, model_name=args.model_name, address=args.address,
                        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                        max_batch=args.max_batch, preferred=args.preferred, max_queue_delay_us=args.max_queue_delay_us,
                        instances=args.instances, threads=args.threads, warmup_s=args.warmup_seconds,
                        timeout_s=args.timeout)
    print(f"ready: model '{info.model_name}' on http {info.url('http')}, grpc {info.url('grpc')}, "
          f"metrics {info.address}:{info.metrics_port} (pid {info.pid}, log {info.log})")
    print(f"measure: python -m core sweep --model {args.model or '<model>'} --url {info.url('grpc')} --protocol grpc")
    print("stop:    python -m core serve --stop")


def cmd_sweep(args):
    from ..audio import load_audio
    from ..backends import make_backend
    from ..cli import _model, _table
    from ..export import parity_audio
    from ..results import save
    from . import server
    from .loadtest import prepare_clips, sweep
    loaded = _model(args)
    local = server.read_state(args.name)
    url = args.url or (local.url(args.protocol) if local else f"localhost:{8000 if args.protocol == 'http' else 8001}")
    model_name = args.model_name or (local.model_name if local else "asr")
    served = args.served_backend or (local.backend if local and not args.url else None)
    audios = [load_audio(p, loaded.sample_rate) for p in args.audio] if args.audio else parity_audio(loaded, n=8)
    with make_backend(args.reference_backend, loaded) as ref:
        clips = prepare_clips(loaded, audios, args.audio_seconds, ref)
    print(f"sweep {url} ({args.protocol}) model '{model_name}': {len(clips)} clips, levels {args.concurrency}, "
          f"≤{args.requests} requests / ≤{args.seconds:g} s per level", file=sys.stderr)
    rows = sweep(loaded, clips, url, args.protocol, model_name, args.concurrency, args.requests, args.seconds,
                 args.timeout, served_backend=served,
                 progress=lambda r: print(f"  c={r['concurrency']}: {r['items_per_s']:.2f} req/s, p50 "
                                          f"{r['p50_ms']:.1f} ms, errors {r['errors']}", file=sys.stderr))
    print(_table(rows, ["concurrency", "n", "errors", "items_per_s", "audio_s_per_s", "p50_ms", "p90_ms", "p99_ms",
                        "consistency", "server_avg_batch", "server_queue_ms", "server_compute_ms"]))
    for r in rows:
        if r["errors"]:
            print(f"  c={r['concurrency']} errors, e.g.: {r['error_examples'][0]}", file=sys.stderr)
    if rows and rows[-1].get("server_died"):
        print("the server stopped answering: sweep ended early", file=sys.stderr)
    if not args.no_save:
        print(f"saved as run {save(rows, 'sweep', note=' '.join(sys.argv[1:]))}", file=sys.stderr)


def _batching(s):
    s.add_argument("--model-name", default="asr", help="name of the model on the server")
    s.add_argument("--max-batch", type=int, default=8)
    s.add_argument("--preferred", type=int, nargs="*", default=[], help="preferred dynamic-batch sizes")
    s.add_argument("--max-queue-delay-us", type=int, default=500)
    s.add_argument("--instances", type=int, default=1)


def add_cli(add):
    s = add("triton-repo", cmd_repo, "Write a Triton container model repository (onnxruntime or tensorrt_plan).")
    s.add_argument("--backend", default="ort:fp16:cuda", help="ort:<precision>:<device> or trt:<precision>:cuda")
    s.add_argument("--engine", help="TensorRT engine (.plan) for trt backends")
    s.add_argument("--kind", choices=("gpu", "cpu"), default="gpu", help="instance kind")
    s.add_argument("--trt-accelerator", action="store_true", help="ONNX Runtime's TensorRT accelerator in Triton")
    _batching(s)
    s = add("serve", cmd_serve, "Serve a backend through a local Triton server (PyTriton, no container).")
    s.add_argument("--backend", default="ort:fp32:cpu")
    s.add_argument("--name", default="default", help="server name (several can run on different ports)")
    s.add_argument("--address", default="127.0.0.1", help="bind address; 0.0.0.0 exposes it to the network")
    for proto, port in (("http", 8000), ("grpc", 8001), ("metrics", 8002)):
        s.add_argument(f"--{proto}-port", type=int, default=port)
    s.add_argument("--threads", type=int, help="intra-op threads per ONNX Runtime instance")
    s.add_argument("--timeout", type=float, default=300, help="seconds to wait for the server to be ready")
    s.add_argument("--warmup-seconds", type=float, help="run every batch size once at this audio length before "
                   "serving (GPU backends that compile or capture graphs per shape)")
    s.add_argument("--stop", action="store_true", help="stop the running server")
    s.add_argument("--status", action="store_true", help="show the running server")
    _batching(s)
    s = add("sweep", cmd_sweep, "Load sweep against a Triton server: throughput/latency per concurrency level.")
    s.add_argument("--url", help="host:port (default: the local `serve` server)")
    s.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    s.add_argument("--model-name", default=None)
    s.add_argument("--name", default="default", help="local server name (for the default url)")
    s.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    s.add_argument("--requests", type=int, default=200, help="max requests per level")
    s.add_argument("--seconds", type=float, default=30, help="max seconds per level")
    s.add_argument("--timeout", type=float, default=10, help="per-request timeout (s)")
    s.add_argument("--audio", nargs="+", help="speech files to send (default: the shipped test clips)")
    s.add_argument("--audio-seconds", type=float, help="tile/crop every clip to this length")
    s.add_argument("--reference-backend", default="torch:fp32:cpu", help="in-process backend for transcript agreement")
    s.add_argument("--served-backend", help="label of what the server runs (recorded with the results)")
    s.add_argument("--no-save", action="store_true")
