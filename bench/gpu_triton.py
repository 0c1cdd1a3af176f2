"""How much of the in-process GPU throughput survives Triton? Serve a model through a local Triton
(PyTriton) on the fastest in-process backend, sweep client concurrency with fixed-length speech, and
compare Triton's audio-seconds/s at concurrency 16 with in-process batch-8 / batch-16 throughput measured
by core.bench in the same run, on the same GPU.

    python bench/gpu_triton.py                              # H100: random:wav2vec2-large, fast:fp16:cuda
    python bench/gpu_triton.py --model random:wav2vec2-tiny --backend ort:fp32:cpu --seconds 1 \\
        --concurrency 1 2 --requests 10 --level-seconds 3 --batches 2 --repeats 3 --warmup 1   # CPU smoke run

Writes $OUT/gpu_triton.json when OUT is set."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.backends import make_backend, option_argument  # noqa: E402
from core.bench import bench_backend  # noqa: E402
from core.envinfo import environment  # noqa: E402
from core.export import parity_audio  # noqa: E402
from core.models import load_model  # noqa: E402
from core.triton import server  # noqa: E402
from core.triton.repo import AUDIO_DTYPES  # noqa: E402
from core.triton.loadtest import cpu_by_role, prepare_clips, server_cpu, sweep  # noqa: E402
from core.triton.stages import PREFIX as STAGES, parse_summary  # noqa: E402
from cpu_halves import parse_cpus  # noqa: E402  (bench/, this script's directory)


def cpu_list(text: str) -> set[int]:
    """--server-cpus/--client-cpus: a CPU list this process may run on."""
    cpus = parse_cpus(text)
    if not cpus <= os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(f"{text}: this process may run only on CPUs {sorted(os.sched_getaffinity(0))}")
    return cpus


def cpu_topology() -> str:
    """Each CPU's hyper-thread siblings, so a pinned run says whether its two sets share physical cores."""
    groups = {}
    for cpu in sorted(os.sched_getaffinity(0)):
        f = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        groups.setdefault(f.read_text().strip() if f.exists() else str(cpu), cpu)   # in order of their first CPU
    return f"{len(os.sched_getaffinity(0))} usable; hyper-thread siblings {' '.join(groups)}"


def gpu_line(r: dict) -> str:
    """', GPU 0 92 % busy, SM 1980 MHz (min 1755)' for each GPU NVML sampled over the level; '' without NVML."""
    mhz = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    return "".join(f", GPU {g['gpu']} {g['util_mean_pct']:.0f} % busy, SM {mhz(g.get('sm_clock_mean_mhz'))} MHz "
                   f"(min {mhz(g.get('sm_clock_min_mhz'))})" for g in r.get("gpu_load") or [])


def stages_by_level(rows: list[dict], lines: list[str], since: float) -> list[str]:
    """Each instance's stage summaries (core.triton.stages) put with the level they fall in: rows[i]["server_stages"]
    becomes {instance: {stage: p50 ms}}. Level i spans from the end of the one before ("ended_at"; `since` for the
    first) to its own end, and holds one summary an instance, which WORKBENCH_STAGES_EVERY_S above a level's
    length gives. Returns the lines it could not place: before `since` (warm-up), after the last level, across two
    levels, or a second one of an instance in a level."""
    left = []
    for line in lines:
        s = parse_summary(line)
        k = next((i for i, r in enumerate(rows) if s and s["t1"] is not None and r["ended_at"] >= s["t1"]), None)
        if k is None or s["t0"] < (rows[k - 1]["ended_at"] if k else since) \
                or s["label"] in rows[k].get("server_stages", {}):
            left.append(line)
        else:
            rows[k].setdefault("server_stages", {})[s["label"]] = s["p50"]
    return left


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random:wav2vec2-large")
    p.add_argument("--backend", default="fast:fp16:cuda",
                   help="in-process backend served by Triton (default: the fastest on W2)")
    p.add_argument("--seconds", type=float, default=5.0, help="audio per request")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--compare-at", type=int, default=16, help="concurrency compared with in-process batches")
    p.add_argument("--level-repeats", type=int, default=1, help="run each concurrency level this many times in a "
                   "row; the comparison takes the median level at --compare-at and prints the spread (one 10-20 s "
                   "level of one configuration spanned 72-77 %% on the H200, twelfth session)")
    p.add_argument("--requests", type=int, default=100_000, help="max requests per level (the time limit rules: at "
                   "~1,000 requests/s, 400 would end a level in 0.4 s)")
    p.add_argument("--level-seconds", type=float, default=20.0, help="max seconds per level")
    p.add_argument("--batches", type=int, nargs="+", default=[8, 16], help="in-process batch sizes")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--preferred", type=int, nargs="*", default=[8],
                   help="preferred dynamic-batch sizes (H200, twelfth session: at concurrency 16 with two instances "
                        "[8] gave 82 %% and 79 %% of in-process at max batch 16 and 32, [8, 16] 72-77 %% and 70-83 %%: "
                        "a preferred 16 hands every request to one instance while the other idles)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--backend-option", type=option_argument, action="append", metavar="KEY=VALUE",
                   help="an option of the served backend only (the in-process ceiling keeps the defaults), e.g. "
                        "compile_scope=whole batch_buckets=[1,2,4,8,16]")
    p.add_argument("--python-backend", action="store_true", help="serve through Triton's Python backend (each instance "
                   "its own process) instead of PyTriton (the instances' Python shares one interpreter)")
    p.add_argument("--input-dtype", choices=AUDIO_DTYPES, default="auto",
                   help="the served audio's type (core serve --input-dtype; auto: FP16 for fast/torch fp16)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--perf-analyzer", action="store_true", help="after the workbench's levels, the same server at "
                   "--compare-at driven by Triton's perf_analyzer (C++ client; core.triton.perf_analyzer), compared "
                   "with in-process the same way: a gap between the two is the load generator's")
    p.add_argument("--perf-analyzer-window-s", type=float, default=5.0,
                   help="perf_analyzer's measurement window (it runs 3 to 10 of them)")
    p.add_argument("--client-processes", type=int, default=8, help="load-generator processes (one sends ~500 "
                   "requests/s of 5 s audio at most; 80 %% of in-process batch 16 on an H200 is ~2,000 requests/s)")
    p.add_argument("--server-cpus", type=cpu_list, help="CPUs for the server and its instances, e.g. 0-7 (they "
                   "inherit this process's affinity when they start); with --client-cpus: do the workbench client's "
                   "alternating slow levels (twenty-second and twenty-fourth sessions) come from where the OS places "
                   "its processes beside the instances?")
    p.add_argument("--client-cpus", type=cpu_list, help="CPUs for the load generator's processes once the server "
                   "is up, e.g. 8-15 (perf_analyzer's too)")
    args = p.parse_args(argv)

    loaded = load_model(args.model)
    audios = parity_audio(loaded, n=4)
    print(f"model {loaded.label}; backend {args.backend}; {args.seconds:g} s per request; "
          f"speech: {', '.join(a.name for a in audios)}", file=sys.stderr)
    with make_backend(args.backend, loaded) as local:  # in-process first, then freed for the server
        clips = prepare_clips(loaded, audios, args.seconds, reference=local)
        # compute scope (device in, device out): the in-process ceiling Triton's throughput is compared with
        inproc = bench_backend(local, loaded, [args.seconds], args.batches, args.warmup, args.repeats,
                               source=audios[0].samples, scopes=("compute",))
    for r in inproc:   # printed now too: a run cut short by its time limit still shows the in-process ceiling
        print(f"  in-process batch {r['batch']}: {r['p50_ms']:.2f} ms, {r['audio_s_per_s']:.1f} audio-s/s",
              file=sys.stderr)
    print(f"CPUs: {cpu_topology()}", file=sys.stderr)
    allowed = os.sched_getaffinity(0)
    # one stage summary a level (each instance inherits this): longer than any level (perf_analyzer's runs up to
    # ten windows), so only the pause between levels ends one
    os.environ.setdefault("WORKBENCH_STAGES_EVERY_S",
                          str(max(60.0, 3 * args.level_seconds, 15 * args.perf_analyzer_window_s)))
    if args.server_cpus:
        os.sched_setaffinity(0, args.server_cpus)
    info = server.start(args.model, args.backend, name="gpu-bench", max_batch=args.max_batch,
                        preferred=[b for b in args.preferred if b <= args.max_batch],
                        max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
                        warmup_s=args.seconds, timeout_s=900, python_backend=args.python_backend,
                        backend_options=dict(args.backend_option or []), input_dtype=args.input_dtype)
    if args.client_cpus or args.server_cpus:   # the clients spawned from here on inherit this
        os.sched_setaffinity(0, args.client_cpus or allowed)
        import psutil
        tree = [psutil.Process(info.pid), *psutil.Process(info.pid).children(recursive=True)]
        print(f"CPUs of the server's processes: {sorted({tuple(q.cpu_affinity()) for q in tree})}; the load "
              f"generator's: {sorted(os.sched_getaffinity(0))}", file=sys.stderr)
    cpu = [server_cpu(info.pid)]

    def progress(r):   # each server process role's share of a core since the previous level ended
        r["ended_at"] = time.time()
        cpu.append(server_cpu(info.pid))
        r["server_cpu_pct"] = {k: round(100 * v / r["wall_s"]) for k, v in cpu_by_role(cpu[-2], cpu[-1]).items()}
        outside = r.get("outside_server_ms")
        client = (f"client CPU {r['client_cpu_pct']:.0f} % (busiest of {r['client_processes']})"
                  if r.get("client_cpu_pct") is not None else f"{r['load_generator']}")
        print(f"  c={r['concurrency']}: {r['audio_s_per_s']:.1f} audio-s/s, p50 {r['p50_ms']:.1f} ms, in flight "
              f"{r['in_flight']:.2f}, outside the server {'-' if outside is None else f'{outside:.2f}'} ms, errors "
              f"{r['errors']}{' ' + r['error_examples'][0] if r['errors'] else ''}, {client}, server CPU "
              f"% of a core by process: {r['server_cpu_pct']}{gpu_line(r)}", file=sys.stderr)
    since = time.time()
    try:
        levels = [c for c in args.concurrency for _ in range(args.level_repeats)]
        rows = sweep(loaded, clips, info.url(args.protocol), args.protocol, info.model_name, levels,
                     args.requests, args.level_seconds, args.timeout, served_backend=args.backend,
                     processes=args.client_processes, progress=progress)
        pa_rows = []
        if args.perf_analyzer:
            cpu.append(server_cpu(info.pid))
            pa_level = max([c for c in args.concurrency if c <= args.compare_at] or [args.compare_at])
            pa_rows = sweep(loaded, clips, info.url(args.protocol), args.protocol, info.model_name, [pa_level],
                            seconds=args.perf_analyzer_window_s, timeout_s=args.timeout, served_backend=args.backend,
                            progress=progress, generator="perf_analyzer")
    finally:
        server.stop(info)
    log = Path(info.log).read_text(errors="replace").splitlines()
    for line in log:
        if line.startswith("WARMED"):   # each instance's warm-up and its GPU memory
            print(f"  {line}", file=sys.stderr)
    # host time per stage of each batch, level by level: did a slow level's server work slow down too?
    for line in stages_by_level(rows + pa_rows, [line for line in log if line.startswith(STAGES)], since):
        print(f"  {line} (not placed in a level)", file=sys.stderr)
    for i, r in enumerate(rows + pa_rows):
        for label, p50 in sorted(r.get("server_stages", {}).items()):
            print(f"  level {i + 1} (c={r['concurrency']}, {r['audio_s_per_s']:.1f} audio-s/s) {label} p50 ms: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in p50.items()), file=sys.stderr)

    at = max((r["concurrency"] for r in rows if r["concurrency"] <= args.compare_at and r["n"]), default=None)
    at_rates = sorted(r["audio_s_per_s"] for r in rows if r["concurrency"] == at and r["n"])
    at_rate = float(np.median(at_rates)) if at_rates else None   # the median level: one level is not a measurement
    ratios = {f"batch_{r['batch']}": (at_rate / r["audio_s_per_s"] if at else None) for r in inproc}
    env = environment()
    print(f"\n# {loaded.label} | {env.get('gpu') or env.get('cpu')} | driver {env.get('driver')} | CUDA {env.get('cuda')} "
          f"| torch {env.get('torch')} | pytriton {env.get('nvidia-pytriton')} | tritonclient {env.get('tritonclient')}")
    print(f"{'in-process (compute scope)':<28}{'batch':>6}{'p50 ms':>10}{'audio-s/s':>12}{'stable':>8}")
    for r in inproc:
        print(f"{args.backend:<28}{r['batch']:>6}{r['p50_ms']:>10.2f}{r['audio_s_per_s']:>12.1f}"
              f"{'yes' if r['stable'] else 'NO':>8}")
    print(f"\n{'triton c':>9}{'ok':>6}{'err':>5}{'req/s':>9}{'audio-s/s':>11}{'p50':>9}{'p90':>9}{'p99':>9}"
          f"{'batch':>7}{'queue ms':>10}{'compute ms':>12}{'io ms':>7}{'agree':>7}")
    f = lambda v, fmt: (format(v, fmt) if isinstance(v, (int, float)) else "-")  # noqa: E731
    for r in rows:
        print(f"{r['concurrency']:>9}{r['n']:>6}{r['errors']:>5}{r['items_per_s']:>9.2f}{r['audio_s_per_s']:>11.1f}"
              f"{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}{f(r.get('server_avg_batch'), '.2f'):>7}"
              f"{f(r.get('server_queue_ms'), '.2f'):>10}{f(r.get('server_compute_ms'), '.2f'):>12}"
              f"{f(r.get('server_io_ms'), '.2f'):>7}"
              f"{f(r.get('consistency'), '.2f'):>7}")
    pa_ratios = {}
    for r in pa_rows:
        pa_ratios = {f"batch_{b['batch']}": (r["audio_s_per_s"] / b["audio_s_per_s"] if r["n"] else None)
                     for b in inproc}
        print(f"{'pa ' + str(r['concurrency']):>9}{r['n']:>6}{r['errors']:>5}{r['items_per_s']:>9.2f}{r['audio_s_per_s']:>11.1f}"
              f"{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{f(r.get('server_avg_batch'), '.2f'):>7}{f(r.get('server_queue_ms'), '.2f'):>10}"
              f"{f(r.get('server_compute_ms'), '.2f'):>12}{f(r.get('server_io_ms'), '.2f'):>7}")
    if at:
        spread = (f" (median of {len(at_rates)} levels, {at_rates[0]:.1f} to {at_rates[-1]:.1f})"
                  if len(at_rates) > 1 else "")
        print(f"\nTriton at concurrency {at}: {at_rate:.1f} audio-s/s{spread} = "
              + ", ".join(f"{v:.0%} of in-process {k.replace('_', ' ')}" for k, v in ratios.items()))
    for r in pa_rows:
        print(f"perf_analyzer at concurrency {r['concurrency']}: " + (
            f"{r['audio_s_per_s']:.1f} audio-s/s (its stable windows of {args.perf_analyzer_window_s:g} s) = "
            + ", ".join(f"{v:.0%} of in-process {k.replace('_', ' ')}" for k, v in pa_ratios.items())
            if r["n"] else f"no measurement: {r['error_examples'][0]}"))
    result = {"model": loaded.source, "label": loaded.label, "backend": args.backend, "seconds": args.seconds,
              "args": vars(args), "in_process": inproc, "triton": rows,
              "compare_at": at, "compare_levels_audio_s_per_s": at_rates, "triton_over_in_process": ratios,
              "perf_analyzer": pa_rows, "perf_analyzer_over_in_process": pa_ratios,
              "env": env}
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu_triton.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str, ensure_ascii=False), encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0 if at else 1


if __name__ == "__main__":
    sys.exit(main())
