"""Closed-loop load sweep against a Triton server: C client threads send real audio back to back, per
concurrency level, bounded by a request count and a time limit. Per level: throughput, latency percentiles,
errors, transcript agreement with an in-process backend, the server's own queue/compute split, and each local GPU's
load while the level ran (NVML; empty with the reason where there is none, or the server is on another machine)."""
from __future__ import annotations

import multiprocessing
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np

from ..envinfo import environment
from ..errors import WorkbenchError
from .gpus import GpuLoad, local_url

LEVELS = (1, 2, 4, 8, 16, 32)
GENERATORS = ("workbench", "perf_analyzer")
CLIENT_BOUND_PCT = 90   # a load-generator process's CPU (% of one core) from which it, not the server, sets the pace


@dataclass
class Clip:
    name: str
    values: np.ndarray      # float32 [1, samples], processor-normalised
    mask: np.ndarray        # int64 [1, samples]
    seconds: float
    reference: str | None   # transcript from the in-process backend


def prepare_clips(loaded, audios, seconds: float | None = None, reference=None) -> list[Clip]:
    """Normalise each clip (optionally tiled/cropped to `seconds`) and transcribe it in-process for comparison."""
    from ..transcribe import decode, features
    clips = []
    for audio in audios:
        samples = audio.samples
        if seconds:
            n = int(seconds * loaded.sample_rate)
            samples = np.tile(samples, int(np.ceil(n / len(samples))))[:n]
        values, mask = features(loaded.processor, [samples], loaded.sample_rate)
        ref = decode(loaded.processor, reference.logits(values, mask))[0] if reference is not None else None
        clips.append(Clip(audio.name, values, mask, len(samples) / loaded.sample_rate, ref))
    if not clips:
        raise WorkbenchError("No audio to send.", "Give --audio files (WAV/FLAC/OGG/MP3).")
    return clips


def _stats_client(url: str, protocol: str, timeout_s: float):
    if protocol == "http":
        import tritonclient.http as http
        return http.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
    import tritonclient.grpc as grpc
    return grpc.InferenceServerClient(url)


def server_stats(client, protocol: str, model_name: str, timeout_s: float) -> dict | None:
    """Cumulative counters from Triton's statistics endpoint (None if the server cannot answer)."""
    try:
        if protocol == "http":
            data = client.get_inference_statistics(model_name)
        else:
            data = client.get_inference_statistics(model_name, as_json=True, client_timeout=timeout_s)
        model = data["model_stats"][0]
    except Exception:
        return None
    inf = model.get("inference_stats", {})
    ns = {k: int(inf.get(k, {}).get("ns", 0))
          for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")}
    return {"requests": int(model.get("inference_count", 0)), "executions": int(model.get("execution_count", 0)),
            "success": int(inf.get("success", {}).get("count", 0)), "fail": int(inf.get("fail", {}).get("count", 0)),
            **{f"{k}_ns": v for k, v in ns.items()}}


def stats_delta(before: dict | None, after: dict | None) -> dict:
    if not before or not after:
        return {"server_stats": False}
    d = {k: after[k] - before[k] for k in before}
    n = max(d["success"], 1)
    return {"server_stats": True, "server_requests": d["requests"], "server_batches": d["executions"],
            "server_avg_batch": d["requests"] / d["executions"] if d["executions"] else None,
            "server_queue_ms": d["queue_ns"] / n / 1e6, "server_compute_ms": d["compute_infer_ns"] / n / 1e6,
            "server_io_ms": (d["compute_input_ns"] + d["compute_output_ns"]) / n / 1e6, "server_fail": d["fail"],
            # a request's whole time in the server, arrival to response (Triton's "success" duration)
            "server_total_ms": d["success_ns"] / n / 1e6}


@dataclass
class Target:
    """What the load generator's clients talk to, and how they read the answers. Picklable: client processes
    rebuild their clients from it."""
    urls: list[str]
    protocol: str
    model_name: str
    timeout_s: float
    processor: object       # decodes each answer to text: the client's CTC decode is part of a request's cost

    def client(self, i: int):
        """Client i (made in its own thread: HTTP clients are gevent-based and thread-bound); several urls: each
        client sticks to one of them in turn (a connection-level balancer, e.g. one server per GPU)."""
        from ..backends import BackendSpec
        from ..backends.triton_backend import TritonBackend
        spec = BackendSpec("triton", "fp32", self.protocol)
        return TritonBackend(spec, url=self.urls[i % len(self.urls)], model_name=self.model_name,
                             timeout_s=self.timeout_s).load()

    def decode(self, logits) -> str:
        from ..transcribe import decode
        return decode(self.processor, logits)[0]


def run_level(target: Target, level: int, clips: list[Clip], requests: int, seconds: float, join_timeout: float,
              first: int = 0, connected=None) -> dict:
    """`level` threads, each with its own client (numbered from `first`), loop until `requests` were sent or
    `seconds` passed. The clock starts once every client is connected (and `connected()`, if given, returned)."""
    lock = threading.Lock()
    stop = threading.Event()
    gate, begin = threading.Barrier(level + 1), threading.Event()
    sent = [0]
    latencies, errors, agree, compared = [], [], [0], [0]
    deadline = [0.0]

    def worker(i: int):
        try:
            client = target.client(i)
        except Exception as err:  # e.g. the server is already gone
            with lock:
                errors.append(str(err).splitlines()[0][:300])
            client = None
        try:
            gate.wait()
        except threading.BrokenBarrierError:  # another client hangs connecting: run anyway
            pass
        begin.wait()
        if client is None:
            return
        try:
            loop(i, client)
        finally:
            client.close()

    def loop(i: int, client):
        while not stop.is_set():
            with lock:
                if sent[0] >= requests or time.monotonic() >= deadline[0]:
                    return
                k = sent[0]
                sent[0] += 1
            clip = clips[(k + i) % len(clips)]
            t0 = time.perf_counter()
            try:
                logits = client.logits(clip.values, clip.mask)
            except Exception as err:  # counted and reported; a dead server ends the level below
                with lock:
                    errors.append(str(err).splitlines()[0][:300])
                if not _live(client):
                    stop.set()
                continue
            dt = (time.perf_counter() - t0) * 1e3
            text = target.decode(logits)
            with lock:
                latencies.append((dt, clip.seconds))
                if clip.reference is not None:
                    compared[0] += 1
                    agree[0] += text == clip.reference

    threads = [threading.Thread(target=worker, args=(first + i,), daemon=True) for i in range(level)]
    for t in threads:
        t.start()
    try:
        gate.wait(timeout=join_timeout)   # every client connected (or failed to)
        if connected:
            connected()
    except threading.BrokenBarrierError:
        pass                              # some client hangs connecting: it counts as hung below
    cpu = time.process_time()
    start = time.perf_counter()
    deadline[0] = time.monotonic() + seconds
    begin.set()
    for t in threads:
        t.join(timeout=max(0.1, start + join_timeout - time.perf_counter()))
    stop.set()
    hung = sum(t.is_alive() for t in threads)
    wall = time.perf_counter() - start
    # this process's CPU time over the level: near 100 % (one interpreter) says the clients, not the server, set
    # the pace
    client_cpu_pct = 100 * (time.process_time() - cpu) / wall if wall else None
    return {"latencies": latencies, "errors": errors, "sent": sent[0], "wall_s": wall, "hung_clients": hung,
            "agree": agree[0], "compared": compared[0], "client_cpu_pct": client_cpu_pct, "client_processes": 1}


def auto_processes(level: int) -> int:
    """Load-generator processes for a level: a quarter of this machine's cores (the rest for the server when it
    runs here too), at most one per client; one on small machines."""
    import os
    return max(1, min(level, (os.cpu_count() or 1) // 4))


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal whole shares, largest first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


@contextmanager
def load_generator(target: Target, level: int, clips: list[Clip], requests: int, seconds: float,
                   join_timeout: float, processes: int = 1):
    """Yields go(): runs one level and returns run_level's dict. With processes > 1, the level's clients are
    split over that many processes (one Python process sends ~500 requests/s of 5 s audio on one core: past that
    the load generator, not the server, sets the pace); they start and connect before go() is called, so the
    level's clock and the caller's GPU sampling do not include their start-up."""
    processes = max(1, min(processes, level))
    if processes == 1:
        yield lambda: run_level(target, level, clips, requests, seconds, join_timeout)
        return
    ctx = multiprocessing.get_context("spawn")   # never fork a process holding CUDA or gRPC state
    go = ctx.Event()
    # one pipe per process, its read end held by this process only: a child whose parent died gets a broken pipe
    # when it reports, instead of blocking on a queue's full buffer forever
    pipes = [ctx.Pipe(duplex=False) for _ in range(processes)]
    clients = shares(level, processes)
    firsts = np.cumsum([0] + clients)[:-1]
    # each process's request cap in proportion to its clients: all finish together, the level stays at `level`
    caps = np.diff(np.round(np.cumsum([0] + clients) * requests / level).astype(int))
    procs = [ctx.Process(target=_level_part, daemon=True, name=f"load-generator-{i}",
                         args=(send, go, target, n, clips, int(r), seconds, join_timeout, int(f)))
             for i, ((_, send), n, r, f) in enumerate(zip(pipes, clients, caps, firsts))]
    try:
        for p, (_, send) in zip(procs, pipes):
            p.start()
            send.close()
        deadline = time.monotonic() + START_S
        for recv, _ in pipes:
            try:
                if not recv.poll(max(0.0, deadline - time.monotonic())):
                    raise WorkbenchError(f"The load generator's {processes} processes did not start within "
                                         f"{START_S:g} s.", "Use fewer client processes.")
                recv.recv()
            except EOFError:
                raise WorkbenchError("A load-generator process ended before it started (its error is on the "
                                     "console).", "Run the sweep with --client-processes 1.") from None

        def run() -> dict:
            go.set()
            parts, deadline = [], time.monotonic() + join_timeout + 30
            for (recv, _), n in zip(pipes, clients):
                try:
                    if not recv.poll(max(0.0, deadline - time.monotonic())):
                        raise EOFError
                    parts.append(recv.recv())
                except (EOFError, OSError):  # a process that never reported: its clients count as hung
                    parts.append(_failed(n, "a load-generator process did not report"))
            return _merged(parts)
        yield run
    finally:
        go.set()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        for recv, _ in pipes:
            recv.close()


START_S = 120.0


def _level_part(send, go, target, level, clips, requests, seconds, join_timeout, first):
    """One load-generator process: connect its clients, report ready, wait for the start, run its share and
    report it (a broken pipe, when the parent has died, ends the process)."""
    def connected():
        send.send("ready")
        while not go.wait(1.0):   # never outlive a parent that died before the start
            if not multiprocessing.parent_process().is_alive():
                raise SystemExit(1)
    try:
        result = run_level(target, level, clips, requests, seconds, join_timeout, first, connected)
    except Exception as err:  # noqa: BLE001 - reported as the level's errors, never a hang
        result = _failed(level, f"load generator: {err}")
    send.send(result)


def _failed(level: int, why: str) -> dict:
    return {"latencies": [], "errors": [why[:300]], "sent": 0, "wall_s": 0.0, "hung_clients": level, "agree": 0,
            "compared": 0, "client_cpu_pct": None}


def _merged(parts: list[dict]) -> dict:
    """The processes' shares of a level as one: their counts added, the longest wall clock, and the busiest
    process's CPU (near 100 % says the load generator still sets the pace)."""
    cpu = [p["client_cpu_pct"] for p in parts if p["client_cpu_pct"] is not None]
    return {"latencies": [x for p in parts for x in p["latencies"]], "errors": [e for p in parts for e in p["errors"]],
            **{k: sum(p[k] for p in parts) for k in ("sent", "hung_clients", "agree", "compared")},
            "wall_s": max(p["wall_s"] for p in parts), "client_cpu_pct": max(cpu) if cpu else None,
            "client_processes": len(parts)}


def server_cpu(pid: int) -> dict[tuple, float]:
    """CPU seconds (user + system) so far of each process of a local server's tree, keyed by (role, pid, start
    time); roles: tritonserver, the Python-backend stubs, the launching process (with PyTriton it runs the model
    too) or the process name. cpu_by_role of two readings around a level gives each role's share of the cores; one
    near 100 % in a Python process is a GIL-bound bottleneck."""
    import psutil
    root, out = psutil.Process(pid), {}
    for proc in [root] + root.children(recursive=True):
        try:
            name, t, started = proc.name(), proc.cpu_times(), proc.create_time()
        except psutil.Error:
            continue
        role = ("tritonserver" if "tritonserver" in name else "python-backend stub" if "stub" in name
                else "launcher" if proc.pid == pid else name)
        out[role, proc.pid, started] = t.user + t.system
    return out


def cpu_by_role(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds each role spent between two server_cpu readings: a process that started in between counts from
    zero, one that ended is left out (summing by role first made a role go negative when a compile worker exited,
    H200 2026-12-02)."""
    out: dict[str, float] = {}
    for key, seconds in after.items():
        out[key[0]] = out.get(key[0], 0.0) + seconds - before.get(key, 0.0)
    return out


def _live(client) -> bool:
    try:
        kw = {"client_timeout": 2.0} if client.device == "grpc" else {}
        return bool(client.client.is_server_live(**kw))
    except Exception:
        return False


# Triton counts a request in its statistics after it has sent the response, so a read right after the last answer
# can miss the last few (CI: 38 of 40 requests)
SETTLE_S = 2.0


def _settled(stats, before: dict | None, answered: int) -> dict | None:
    """The server's counters once they count the `answered` requests since `before` (waiting at most SETTLE_S)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        after = stats()
        if not (after and before) or after["requests"] - before["requests"] >= answered \
                or time.monotonic() > deadline:
            return after
        time.sleep(0.02)


def _summed(stats: list[dict | None]) -> dict | None:
    """Several servers' counters added up (None when any cannot answer)."""
    if not stats or any(s is None for s in stats):
        return None
    return {k: sum(s[k] for s in stats) for k in stats[0]}


def sweep(loaded, clips: list[Clip], url: str | list[str], protocol: str = "http", model_name: str = "asr",
          concurrency=LEVELS, requests: int = 200, seconds: float = 30.0, timeout_s: float = 10.0,
          served_backend: str | None = None, progress=None, processes: int | None = 1,
          generator: str = "workbench", stability_pct: float | None = None) -> list[dict]:
    """One row per concurrency level (kind "sweep"); stops early when the server is gone. Several urls: servers
    behind a client-side balancer (see Target.client), their statistics added up. processes: the load generator's
    processes (see load_generator); None: auto_processes(level) for each level. generator: "workbench" (this
    module's clients, transcripts compared) or "perf_analyzer" (Triton's C++ client, one server, `seconds` its
    measurement window, `stability_pct` the margin its windows must agree within; core.triton.perf_analyzer)."""
    if generator not in GENERATORS:
        raise WorkbenchError(f"Unknown load generator '{generator}'.", f"Choose one of {', '.join(GENERATORS)}.")
    from ..backends import BackendSpec
    urls = [url] if isinstance(url, str) else list(url)
    spec = BackendSpec("triton", "fp32", protocol)
    env = environment()
    stats_clients = [_stats_client(u, protocol, timeout_s) for u in urls]

    target = Target(urls, protocol, model_name, timeout_s, loaded.processor)

    def stats():
        return _summed([server_stats(c, protocol, model_name, timeout_s) for c in stats_clients])

    audio_mean = float(np.mean([c.seconds for c in clips]))
    away = [u for u in urls if not local_url(u)]
    remote = f"the server at {away[0]} is not on this machine: NVML sees only local GPUs" if away else None
    rows = []
    try:
        with ExitStack() as stack:
            pa = None if generator == "workbench" else \
                stack.enter_context(_perf_analyzer(target, clips, seconds, stability_pct))
            for level in concurrency:
                before = stats()
                if pa:   # its server figures are those of its stable windows, not the whole run's
                    with GpuLoad(why_not=remote) as load:
                        row = {**row_identity(loaded, spec, ",".join(urls), model_name, level, audio_mean, env,
                                              served_backend), **pa(level)}
                    after = stats()
                else:
                    with load_generator(target, level, clips, requests, seconds, seconds + 2 * timeout_s + 5,
                                        processes or auto_processes(level)) as go, GpuLoad(why_not=remote) as load:
                        r = go()
                    after = _settled(stats, before, len(r["latencies"]))
                    row = level_row(loaded, spec, ",".join(urls), model_name, level, r, audio_mean, env,
                                    served_backend)
                    row.update(stats_delta(before, after))
                if row["server_stats"] and row["n"]:   # what the round trip adds: transport, (de)serialisation, client
                    row["outside_server_ms"] = row["mean_ms"] - row["server_total_ms"]
                row.update(load.result())
                row["server_died"] = after is None and bool(row["errors"])
                rows.append(row)
                if progress:
                    progress(row)
                if row["server_died"] or (row["errors"] and not row["n"]):
                    break
    finally:
        for client in stats_clients:
            try:
                client.close()
            except Exception:
                pass
    return rows


def _perf_analyzer(target: Target, clips: list[Clip], window_s: float, stability_pct: float | None = None):
    """A perf_analyzer runner sending these clips as the server declares its inputs (read by a workbench client)."""
    from .perf_analyzer import Runner, input_data
    if len(target.urls) > 1:
        raise WorkbenchError("perf_analyzer drives one server.", "Sweep one --url at a time, or use the workbench's "
                             "load generator, which spreads its clients over several servers.")
    probe = target.client(0)
    try:
        with_mask = "attention_mask" in probe.input_names and "attention_mask" not in probe.optional_inputs
        data = input_data(clips, probe.audio_dtype, with_mask)
    finally:
        probe.close()
    audio_s = float(np.mean([c.seconds for c in clips]))
    return Runner(target.urls[0], target.protocol, target.model_name, data, audio_s, window_s,
                  stability_pct=stability_pct)


def row_identity(loaded, spec, url, model_name, level, audio_mean, env, served_backend) -> dict:
    """What a sweep row is of: the model, the served backend, the level, the environment."""
    return {"kind": "sweep", "model": loaded.source, "model_label": loaded.label,
            "random_weights": loaded.random_weights, "backend": str(spec), "runtime": "triton",
            "precision": spec.precision, "device": spec.device, "audio_s": round(audio_mean, 3), "batch": 1,
            "concurrency": level, "url": url, "model_name": model_name, "served_backend": served_backend,
            "load_generator": "workbench", "env": env}


def level_row(loaded, spec, url, model_name, level, r, audio_mean, env, served_backend) -> dict:
    """A workbench level's row: its figures from its requests' round trips (run_level's dict)."""
    ok = len(r["latencies"])
    lat = np.array([t for t, _ in r["latencies"]]) if ok else np.array([np.nan])
    audio = sum(s for _, s in r["latencies"])
    wall = r["wall_s"] or float("nan")
    row = {**row_identity(loaded, spec, url, model_name, level, audio_mean, env, served_backend),
           "n": ok, "errors": len(r["errors"]), "requests_sent": r["sent"],
           "wall_s": r["wall_s"], "items_per_s": ok / wall if ok else 0.0, "audio_s_per_s": audio / wall if ok else 0.0,
           "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
           "p99_ms": float(np.percentile(lat, 99)), "mean_ms": float(lat.mean()),
           # requests outstanding on average (Little's law): below `concurrency` by the time each client spends
           # between an answer and its next request (its CTC decode, its share of one interpreter)
           "in_flight": float(lat.sum()) / 1e3 / wall if ok else 0.0,
           "consistency": r["agree"] / r["compared"] if r["compared"] else None,
           "hung_clients": r["hung_clients"], "error_examples": sorted(set(r["errors"]))[:3],
           "client_cpu_pct": r.get("client_cpu_pct"), "client_processes": r.get("client_processes", 1)}
    row["rtf"] = row["mean_ms"] / 1e3 / audio_mean if ok else None
    # a load-generator process near a full core (its Python is one thread at a time) paced the level itself
    row["client_bound"] = (r.get("client_cpu_pct") or 0) >= CLIENT_BOUND_PCT
    return row
