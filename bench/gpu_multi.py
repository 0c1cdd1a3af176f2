"""Does a second GPU double Triton's throughput? Serve one backend through a local Triton (PyTriton,
core.triton.serve --gpus) on one GPU, then on two, with the same instances per GPU, sweep concurrency 32 against each
(closed loop, fixed-length real speech) and print throughput on 2 GPUs / 1 GPU with each GPU's NVML load.
Issue 17 part 5 asks for >= 1.8x at concurrency 32 on a 2-GPU H200 machine.

    OUT=/tmp/out /tmp/tv/bin/python bench/gpu_multi.py                  # random:wav2vec2-large, fast:fp16:cuda
    /tmp/tv/bin/python bench/gpu_multi.py --backend torch:fp16:cuda --gpu-sets 0 0,1 --level-seconds 20

Only runtimes that follow the current CUDA device (fast, torch) spread over GPUs in one server (serve.py refuses ort/trt
on GPUs other than 0). Needs PyTriton with numpy<2 (/tmp/tv from bench/device_numpy1_env.sh) and nvidia-ml-py.
Writes $OUT/gpu_multi.json when OUT is set; exits 1 when the ratio is below --target."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.envinfo import environment  # noqa: E402
from core.export import parity_audio  # noqa: E402
from core.models import load_model  # noqa: E402
from core.triton.loadtest import cpu_by_role, prepare_clips, server_cpu, sweep  # noqa: E402
from core.triton.pybackend import libpython_env, ready  # noqa: E402
from core.triton.server import free_port  # noqa: E402
from core.triton.stages import PREFIX as STAGES  # noqa: E402


def start(args, gpus: list[int], log: Path, visible: int | None = None) -> tuple[subprocess.Popen, dict]:
    """core.triton.serve in its own process group (tritonserver and the stubs are its children), ready or raising.
    visible: the one GPU this server sees (CUDA_VISIBLE_DEVICES), for one server per GPU."""
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    cmd = [sys.executable, "-m", "core.triton.serve", "--model", args.model, "--backend", args.backend,
           "--max-batch", str(args.max_batch), "--max-queue-delay-us", str(args.max_queue_delay_us),
           "--instances", str(args.instances), "--gpus", *map(str, [0] if visible is not None else gpus),
           "--warmup-seconds", str(args.seconds),
           "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]), "--metrics-port", str(ports["metrics"])]
    if args.preferred:
        cmd += ["--preferred", *map(str, args.preferred)]
    if args.python_backend:
        cmd.append("--python-backend")
    env = libpython_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(visible)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server on GPUs {gpus} exited ({proc.returncode}):\n"
                               + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
        if ready(f"127.0.0.1:{ports['http']}", "asr"):
            return proc, ports
        time.sleep(1)
    stop(proc)
    raise RuntimeError(f"the server on GPUs {gpus} was not ready after {args.start_timeout:g} s (log {log})")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group, SIGKILL what is left after 20 s (only what this script started)."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random:wav2vec2-large")
    p.add_argument("--backend", default="fast:fp16:cuda", help="fast:… or torch:… (they follow the chosen GPU)")
    p.add_argument("--gpu-sets", nargs="+", default=["0", "0,1"], help="GPU lists served in turn (first: the baseline)")
    p.add_argument("--seconds", type=float, default=5.0, help="audio per request")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=100_000, help="max requests per level (the time limit rules)")
    p.add_argument("--level-seconds", type=float, default=30.0)
    p.add_argument("--warm-seconds", type=float, default=5.0, help="an unrecorded level first (clients, batcher)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--preferred", type=int, nargs="*", default=[8, 16])
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--instances", type=int, default=2, help="model instances on each GPU (the same for every set)")
    p.add_argument("--python-backend", action="store_true", help="serve through Triton's Python backend (a process "
                   "per instance) instead of PyTriton (every instance in the serving process)")
    p.add_argument("--server-per-gpu", action="store_true", help="a GPU set of several GPUs is served by one server "
                   "per GPU (CUDA_VISIBLE_DEVICES), the clients spread over them, instead of one server over all")
    p.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    p.add_argument("--client-processes", type=int, default=4, help="load-generator processes (one sends ~500 "
                   "requests/s: one would cap the rate the servers are asked for)")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--start-timeout", type=float, default=900.0)
    p.add_argument("--reference-backend", default=None, help="in-process backend for transcript agreement (e.g. "
                   "torch:fp32:cuda with --model demo; random weights make agreement meaningless)")
    p.add_argument("--target", type=float, default=1.8, help="the ratio the last set must reach over the first")
    args = p.parse_args(argv)

    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_model(args.model)
    audios = parity_audio(loaded, n=4)
    reference = None
    if args.reference_backend:
        from core.backends import make_backend
        reference = make_backend(args.reference_backend, loaded).load()
    clips = prepare_clips(loaded, audios, args.seconds, reference)
    if reference is not None:
        reference.close()
    results = []
    for gset in args.gpu_sets:
        gpus = [int(g) for g in gset.split(",")]
        per_gpu = args.server_per_gpu and len(gpus) > 1
        logs = ([out / f"gpu_multi_server_{g}_of_{'-'.join(map(str, gpus))}.log" for g in gpus] if per_gpu
                else [out / f"gpu_multi_server_{'-'.join(map(str, gpus))}.log"])
        how = f"{'one server per GPU, ' if per_gpu else ''}{args.instances} instance(s) each"
        print(f"serving {args.backend} on GPUs {gpus} ({how}) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        servers = []
        try:
            for g, log in zip(gpus, logs) if per_gpu else [(None, logs[0])]:
                servers.append(start(args, gpus, log, visible=g))
            print(f"  ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            urls = [f"127.0.0.1:{ports[args.protocol]}" for _, ports in servers]
            if args.warm_seconds:
                sweep(loaded, clips, urls, args.protocol, "asr", [args.concurrency], args.requests, args.warm_seconds,
                      args.timeout, served_backend=args.backend, processes=args.client_processes)
            cpu0 = [server_cpu(proc.pid) for proc, _ in servers]
            [row] = sweep(loaded, clips, urls, args.protocol, "asr", [args.concurrency], args.requests,
                          args.level_seconds, args.timeout, served_backend=args.backend,
                          processes=args.client_processes)
            # each server process role's share of one core over the level (spawn and connect take ~1 s more)
            row["server_cpu_pct"] = [{k: round(100 * v / row["wall_s"]) for k, v in cpu_by_role(a, b).items()}
                                     for a, b in zip(cpu0, [server_cpu(proc.pid) for proc, _ in servers])]
        finally:
            for proc, _ in servers:
                stop(proc)
        for log in logs:   # host time per stage of each instance's batches
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith(STAGES):
                    print(f"  {line}", file=sys.stderr, flush=True)
        row["servers"] = len(servers)
        row["gpus"] = gpus
        results.append(row)
        loads = ", ".join(f"GPU {g['gpu']} {g['util_mean_pct']:.0f} %" for g in row.get("gpu_load") or []) or \
            row.get("gpu_load_reason")
        print(f"  c={args.concurrency}: {row['audio_s_per_s']:.1f} audio-s/s, p50 {row['p50_ms']:.1f} ms, errors "
              f"{row['errors']}; load: {loads}; busiest client process CPU {row['client_cpu_pct']:.0f} % (of "
              f"{row['client_processes']}); server CPU % of a core by process: {row['server_cpu_pct']}",
              file=sys.stderr, flush=True)

    base = results[0]["audio_s_per_s"] or float("nan")
    env = environment()
    print(f"\n# {loaded.label} | {args.backend} | {args.seconds:g} s requests over {args.protocol} | max batch "
          f"{args.max_batch}, preferred {args.preferred}, queue delay {args.max_queue_delay_us} µs | {args.instances} "
          f"instance(s) per GPU, {'Python backend' if args.python_backend else 'PyTriton'}"
          f"{', one server per GPU' if args.server_per_gpu else ''} | {env.get('gpu')} | driver {env.get('driver')} | torch {env.get('torch')}")
    print(f"{'GPUs':>6}{'c':>5}{'ok':>7}{'err':>5}{'req/s':>9}{'audio-s/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'batch':>7}{'x base':>8}  GPU utilisation (mean %)")
    for r in results:
        util = " ".join(f"{g['gpu']}:{g['util_mean_pct']:.0f}" for g in r.get("gpu_load") or []) or "-"
        batch = r.get("server_avg_batch")
        print(f"{','.join(map(str, r['gpus'])):>6}{r['concurrency']:>5}{r['n']:>7}{r['errors']:>5}"
              f"{r['items_per_s']:>9.1f}{r['audio_s_per_s']:>11.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{batch if batch is None else round(batch, 2)!s:>7}{r['audio_s_per_s'] / base:>8.2f}  {util}")
    ratio = results[-1]["audio_s_per_s"] / base
    ok = ratio >= args.target and not any(r["errors"] for r in results)
    print(f"\nthroughput on GPUs {results[-1]['gpus']} / GPUs {results[0]['gpus']} at concurrency {args.concurrency}: "
          f"{ratio:.2f}x ({'meets' if ok else 'misses'} the {args.target:g}x target"
          f"{'' if not any(r['errors'] for r in results) else '; some requests failed'})")
    (out / "gpu_multi.json").write_text(json.dumps({"args": vars(args), "rows": results, "ratio": ratio, "env": env},
                                                   indent=2, default=str, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {out / 'gpu_multi.json'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
