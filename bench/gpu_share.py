"""How well separate processes share one GPU on the served path (issue 16, item 4), with no Triton server: k
processes each run one instance's batch path (core.triton.serve.make_infer: pad, prepare, run, to_host, split)
on the same batch of 8 requests of 5 s, back to back, all timed over the same window; the figure is their
batches per second together against one process alone. Run plain (the processes' CUDA contexts time-sliced)
and, where nvidia-cuda-mps-control exists, under an MPS daemon of this script's own (one shared context), which
it quits before it exits. The default backend options skip torch.compile (the eager fast module with CUDA
graphs), so a run fits a short device call; the kernels are the served ones' but for Inductor's fusions.

    python3 bench/gpu_share.py [--model random:wav2vec2-large] [--backend fast:fp16:cuda] [--procs 1 2 3]
        [--mps-procs 2 3] [--seconds 8] [--no-mps] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPTIONS = {"compile": None, "buckets_s": [5], "batch_buckets": [8]}


def worker(args) -> None:
    sys.path.insert(0, str(REPO))
    import numpy as np
    from core.backends import make_backend
    from core.models import load_model
    from core.triton.serve import make_infer
    from core.triton.stages import StageTimes
    loaded = load_model(args.model)
    rate = loaded.sample_rate
    x = (0.1 * np.random.default_rng(0).standard_normal((1, 5 * rate))).astype(np.float32)
    requests = [{"input_values": x} for _ in range(args.batch)]
    options = OPTIONS if args.backend.startswith("fast:") else {}
    with make_backend(args.backend, loaded, **options) as backend:
        stages = StageTimes("share", every_s=1e9)   # host stages vs the GPU wait (to_host), per batch
        infer = make_infer(backend, loaded, stages)
        for _ in range(5):
            infer(requests)
        stages.ms = {}
        Path(args.ready).touch()
        while not Path(args.go).exists():
            time.sleep(0.001)
        start = time.perf_counter()
        end, times = start + args.seconds, []
        while (t := time.perf_counter()) < end:
            infer(requests)
            times.append(time.perf_counter() - t)
    print(json.dumps({"batches": len(times), "seconds": time.perf_counter() - start,
                      "p50_ms": 1e3 * statistics.median(times),
                      "p90_ms": 1e3 * statistics.quantiles(times, n=10)[-1],
                      "stages_p50_ms": {k: round(statistics.median(v), 3) for k, v in stages.ms.items()}}), flush=True)


def run_level(args, k: int, env: dict) -> dict:
    """k workers started together; the window opens once every one has warmed up."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp, "go")
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--ready", f"{tmp}/ready{i}", "--go", str(go),
                                   "--model", args.model, "--backend", args.backend, "--batch", str(args.batch),
                                   "--seconds", str(args.seconds)], stdout=subprocess.PIPE, text=True, env=env)
                 for i in range(k)]
        deadline = time.time() + args.ready_timeout
        while not all(Path(tmp, f"ready{i}").exists() for i in range(k)):
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                for p in procs:
                    p.kill()
                return {"procs": k, "error": "a worker did not warm up (exit codes "
                        f"{[p.poll() for p in procs]})"}
            time.sleep(0.05)
        go.touch()
        rows = [json.loads(p.communicate(timeout=args.seconds + 120)[0].strip().splitlines()[-1]) for p in procs]
    per_s = sum(r["batches"] / r["seconds"] for r in rows)
    return {"procs": k, "batches_per_s": round(per_s, 1),
            "audio_s_per_s": round(per_s * args.batch * 5, 1),
            "p50_ms": [round(r["p50_ms"], 2) for r in rows], "p90_ms": [round(r["p90_ms"], 2) for r in rows],
            "stages_p50_ms": [r["stages_p50_ms"] for r in rows]}


def levels(args, env: dict, label: str, counts) -> list[dict]:
    out = []
    for k in counts:
        row = dict(run_level(args, k, env), mode=label)
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:wav2vec2-large")
    p.add_argument("--backend", default="fast:fp16:cuda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--mps-procs", type=int, nargs="+", help="process counts under MPS (default: --procs)")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--no-mps", action="store_true")
    p.add_argument("--json")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--ready")
    p.add_argument("--go")
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rows = levels(args, env, "plain", args.procs)
    mps = shutil.which("nvidia-cuda-mps-control")
    if args.no_mps or not mps:
        print("MPS: not run (" + ("--no-mps" if args.no_mps else "nvidia-cuda-mps-control is not on this machine")
              + ")", flush=True)
    else:
        tmp = tempfile.mkdtemp(prefix="mps-")
        menv = dict(env, CUDA_MPS_PIPE_DIRECTORY=f"{tmp}/pipe", CUDA_MPS_LOG_DIRECTORY=f"{tmp}/log")
        os.makedirs(menv["CUDA_MPS_PIPE_DIRECTORY"]), os.makedirs(menv["CUDA_MPS_LOG_DIRECTORY"])
        started = subprocess.run([mps, "-d"], env=menv, capture_output=True, text=True)
        print(f"MPS daemon: exit {started.returncode} {started.stderr.strip()}", flush=True)
        try:
            if started.returncode == 0:
                rows += levels(args, menv, "mps", args.mps_procs or args.procs)
        finally:
            subprocess.run([mps], input="quit\n", env=menv, text=True, capture_output=True)
    one = next((r["batches_per_s"] for r in rows if r["procs"] == 1 and r["mode"] == "plain" and "error" not in r), None)
    for r in rows:
        if one and "error" not in r:
            print(f"{r['mode']:>5} {r['procs']} processes: {r['batches_per_s']} batches/s = "
                  f"{r['batches_per_s'] / one:.2f}x one process; p50 ms per batch {r['p50_ms']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
