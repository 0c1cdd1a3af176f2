"""What one sweep request costs in CPU on each side (issue 17, part 5): a real Triton server (PyTriton, or Triton's
Python backend with --python-backend; `core.triton.serve`) in its own process group, and this process sending
5 s requests over gRPC or HTTP at a concurrency level through the sweep's own load generator. Reports:
- the client's CPU milliseconds per request and the ceiling that puts on one client process (1000 / that, at
  100 % of one core), next to the parts spent in CTC decoding alone and in preparing the request alone (the audio's
  cast where the server takes FP16, and tritonclient's InferInput);
- the server's CPU milliseconds per request for each of its processes (tritonserver, the Python-backend stub,
  PyTriton's own process, which also runs the model), and what the model's callable (core.triton.serve.make_infer)
  costs for the same batches in this process. tritonserver's and the stub's figures are the serving path's own
  cost, which on a GPU machine stays on the host; on this CPU the model's compute swamps PyTriton's share.

The model's compute enters neither the client's figure nor tritonserver's, so a small CPU model serves; on a small
machine the sides compete for the cores, so the wall-clock rate is not the point, the CPU per request is.

    python bench/triton_client_cost.py --seconds 5 --level-seconds 15 --protocol grpc [--python-backend] [--input-dtype fp16]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random:wav2vec2-tiny")
    p.add_argument("--backend", default="torch:fp32:cpu")
    p.add_argument("--seconds", type=float, default=5.0, help="audio per request")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--level-seconds", type=float, default=15.0)
    p.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    p.add_argument("--client-processes", type=int, default=1)
    p.add_argument("--python-backend", action="store_true", help="serve through Triton's Python backend")
    p.add_argument("--input-dtype", choices=("auto", "fp32", "fp16"), default="auto",
                   help="the served audio's type (core.triton.repo.audio_dtype); fp16 makes the client cast each request")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    args = p.parse_args(argv)

    from core.audio import Audio
    from core.envinfo import environment
    from core.models import load_model
    from core.triton import server
    from core.triton.loadtest import (Target, _stats_client, cpu_by_role, load_generator, prepare_clips,
                                      server_cpu, server_stats, stats_delta)

    info = server.start(args.model, args.backend, name="client-cost", max_batch=16, preferred=[8, 16],
                        max_queue_delay_us=2000, warmup_s=args.seconds, python_backend=args.python_backend,
                        input_dtype=args.input_dtype)
    try:
        loaded = load_model(args.model)
        rng = np.random.default_rng(0)
        audio = Audio(samples=(0.1 * rng.standard_normal(int(args.seconds * loaded.sample_rate))).astype(np.float32),
                      sample_rate=loaded.sample_rate, name="noise")
        clips = prepare_clips(loaded, [audio])
        target = Target([info.url(args.protocol)], args.protocol, "asr", 30.0, loaded.processor)
        # the decode alone, on the server's own answer; and the request's preparation alone (cast, InferInput)
        with target.client(0) as probe:
            sent_mask = "attention_mask" in [i.name() for i in probe.prepare(clips[0].values, clips[0].mask)[0]]
            logits = probe.logits(clips[0].values, clips[0].mask)
            audio_dtype = probe.audio_dtype
            prepare_ms = cpu_ms_per_call(lambda: probe.prepare(clips[0].values, clips[0].mask))
        decode_ms = cpu_ms_per_call(lambda: target.decode(logits))
        stats = _stats_client(target.urls[0], args.protocol, 30.0)
        for seconds in (3.0, args.level_seconds):  # an unrecorded level first: clients, batcher
            with load_generator(target, args.concurrency, clips, 10**9, seconds, seconds + 60,
                                args.client_processes) as go:
                before, cpu0 = server_stats(stats, args.protocol, "asr", 30.0), server_cpu(info.pid)
                r = go()
                cpu1, after = server_cpu(info.pid), server_stats(stats, args.protocol, "asr", 30.0)
        n = len(r["latencies"])
        counts = stats_delta(before, after)
        served = counts["server_requests"]
        server_ms = {k: round(v / served * 1e3, 3) for k, v in cpu_by_role(cpu0, cpu1).items()}
        callable_ms = callable_cpu_ms(loaded, args.backend, clips[0], round(counts["server_avg_batch"]))
        # CPU of the busiest process; with several, each carries about 1/processes of the requests
        cpu_ms = r["client_cpu_pct"] / 100 * r["wall_s"] / max(n, 1) * 1e3 * r["client_processes"]
        result = {
            "protocol": args.protocol, "concurrency": args.concurrency, "client_processes": r["client_processes"], "audio_s": args.seconds,
            "audio_dtype": audio_dtype,
            "request_bytes": int(clips[0].values.nbytes // (2 if audio_dtype == "FP16" else 1)
                                 + (clips[0].mask.nbytes if sent_mask else 0)),
            "response_bytes": int(np.asarray(logits).nbytes), "sends_attention_mask": sent_mask,
            "requests": n, "errors": len(r["errors"]), "wall_s": round(r["wall_s"], 2),
            "requests_per_s": round(n / r["wall_s"], 1), "client_cpu_pct": round(r["client_cpu_pct"], 1),
            "client_cpu_ms_per_request": round(cpu_ms, 3), "decode_ms_per_request": round(decode_ms, 3),
            "prepare_ms_per_request": round(prepare_ms, 3),
            "one_client_process_ceiling_requests_per_s": round(1e3 / cpu_ms),
            "serving": "Triton Python backend" if args.python_backend else "PyTriton",
            "server_avg_batch": round(counts["server_avg_batch"], 2), "server_cpu_ms_per_request": server_ms,
            "server_cpu_ms_per_request_total": round(sum(server_ms.values()), 3),
            "callable_cpu_ms_per_request_in_process": round(callable_ms, 3),
            "cores": os.cpu_count(),
            "env": environment(),
        }
    finally:
        server.stop(info)
    print(json.dumps({k: v for k, v in result.items() if k != "env"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def cpu_ms_per_call(fn, repeats: int = 200) -> float:
    """This process's CPU milliseconds per call of `fn`."""
    t0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - t0) / repeats * 1e3


def callable_cpu_ms(loaded, backend_spec: str, clip, batch: int, repeats: int = 20) -> float:
    """CPU per request of the served model's callable alone, for batches of `batch` such requests, in this process
    (its threads included: process time)."""
    from core.backends import make_backend
    from core.triton.serve import make_infer
    requests = [{"input_values": clip.values} for _ in range(max(1, batch))]
    with make_backend(backend_spec, loaded) as backend:
        infer = make_infer(backend, loaded)
        infer(requests)
        t0 = time.process_time()
        for _ in range(repeats):
            infer(requests)
        return (time.process_time() - t0) / repeats / len(requests) * 1e3


if __name__ == "__main__":
    sys.exit(main())
