"""Serving: a local Triton server (PyTriton) or any Triton URL, its health and models, and a load sweep
(core.triton.server / core.triton.loadtest; the CLI equivalents are `serve` and `sweep`)."""

import pandas as pd
import plotly.express as px
import streamlit as st

from core import charts, jobs
from core.results import rows as result_rows
from pages._shared import active_model, available_backends, follow_job, guarded, model_badge, optional


@st.cache_data(ttl=300, show_spinner=False)
def perf_analyzer_here() -> tuple[bool, str]:
    """Whether Triton's perf_analyzer runs here (a subprocess each time: cached)."""
    from core.triton import perf_analyzer
    return perf_analyzer.available()


st.title("Serving")
loaded = active_model()
model_badge(loaded)

server = optional("core.triton.server")
loadtest = optional("core.triton.loadtest")
if server is None:
    st.info("Serving is not in this build (core.triton is missing). You can still check a running server below.",
            icon=":material/info:")

live = ready = False
c1, c2 = st.columns(2, gap="large")
with c1, st.container(border=True):
    st.markdown("#### :material/play_circle: Local Triton server")
    if server is not None:
        info = server.read_state("default")
        if info:
            st.success(f"Running: model **{info.model_name}** ({info.backend}, {info.model or 'default model'}, "
                       f"{info.audio} audio) · "
                       f"http `{info.url('http')}` · grpc `{info.url('grpc')}` · pid {info.pid}",
                       icon=":material/check_circle:")
            if st.button("Stop server", icon=":material/stop:"):
                with guarded(), st.spinner("Stopping …"):
                    server.stop(info)
                    st.rerun()
            with st.expander("Server log"):
                st.code(server.log_tail(info.log, 40) or "(empty)", language="text")
        else:
            specs = [s for s in available_backends() if s.split(":")[0] in ("ort", "torch", "trt", "fast")]
            spec = st.selectbox("Backend inside the server", specs, key="serve_backend",
                                index=specs.index("ort:fp32:cpu") if "ort:fp32:cpu" in specs else 0)
            c = st.columns(4)
            max_batch = c[0].number_input("Max batch", 1, 256, 8, help="Largest batch Triton's dynamic batcher forms")
            preferred = c[1].text_input(
                "Preferred batch sizes", "", key="serve_preferred", placeholder="none",
                help="Sizes the batcher sends as soon as it has them, e.g. '4 8'. Keep them at most the expected "
                     "concurrency over the instances: on an H200 with two instances at concurrency 16, preferred 8 "
                     "served 71-84 % of in-process throughput at max batch 16 and 74-83 % at 32 (medians over five "
                     "leases), preferred 16 32 only 44 % (one instance took every request while the other idled).")
            delay = c[2].number_input("Max queue delay (µs)", 0, 100000, 500)
            warmup = c[3].number_input("Warm-up audio (s)", 0.0, 30.0, 0.0, key="serve_warmup",
                                       help="Run every batch size once at this length before serving: GPU backends "
                                            "that compile or capture CUDA graphs per shape (fast:…) would otherwise "
                                            "time out their first requests.")
            from core.backends import BackendSpec
            from core.triton.gpus import visible_gpus
            from core.triton.serve import PLACEABLE
            c = st.columns(3)
            instances = c[0].number_input("Instances", 1, 16, 1, key="serve_instances",
                                          help="Model instances (each with its own backend); with GPUs chosen, on "
                                               "each of them")
            parsed = BackendSpec.parse(spec)
            gpu_count = visible_gpus() if parsed.runtime in PLACEABLE and parsed.device == "cuda" else 0
            gpus = c[1].multiselect("GPUs", list(range(gpu_count)), key="serve_gpus", disabled=not gpu_count,
                                    help="Spread the instances over these GPUs (fast and torch backends on CUDA); "
                                         "none: the backend's own GPU")
            from core.triton.repo import AUDIO_DTYPES
            input_dtype = c[2].selectbox(
                "Audio on the wire", AUDIO_DTYPES, key="serve_input_dtype",
                help="Type of the served input_values; clients read it from the model's metadata. auto: FP16 for "
                     "fast and torch fp16 backends, which cast the audio to FP16 first (same outputs, half the "
                     "bytes per request; on an H200 79 % of in-process against FP32's 75 % in the same lease), "
                     "FP32 for the others.")
            processes = st.toggle("A process per instance", key="serve_pybackend",   # own row: the label in full
                                  help="Triton's own Python backend runs each instance as its own process (own "
                                       "interpreter, own GPU); off: PyTriton calls every instance in one process. "
                                       "On two H200s neither reached 1.8x one GPU (0.84x, 0.86x; bench/NOTES.md).")
            if st.button("Start server", type="primary", icon=":material/play_arrow:", disabled=not specs):
                with guarded(), st.spinner(f"Starting Triton with {spec} — loading the model …"):
                    started = server.start(loaded.source, spec, max_batch=int(max_batch), preferred=preferred,
                                           max_queue_delay_us=int(delay), warmup_s=float(warmup) or None,
                                           instances=int(instances), gpus=gpus or None, python_backend=processes,
                                           input_dtype=input_dtype)
                    st.session_state["triton_url"] = started.url("http")  # point Connect and the sweep at it
                    st.rerun()
            st.caption("Same as `python -m core serve --backend … [--preferred …] [--instances N] [--gpus …] "
                       "[--python-backend] [--input-dtype …]`; "
                       "the server keeps running when you leave the page.")

with c2, st.container(border=True):
    st.markdown("#### :material/link: Connect")
    local = server.read_state("default") if server is not None else None
    st.session_state.setdefault("triton_url", local.url("http") if local else "localhost:8000")
    url = st.text_input("Triton HTTP URL (host:port)", key="triton_url")
    with guarded():
        import tritonclient.http as http
        try:
            client = http.InferenceServerClient(url.removeprefix("http://"), connection_timeout=2.0,
                                                network_timeout=5.0)
            live, ready = client.is_server_live(), client.is_server_ready()
        except Exception as err:  # noqa: BLE001 — refused / DNS / timeout all mean "not reachable"
            st.caption(f":gray[No server at {url}: {type(err).__name__}]")
        st.markdown((":green-badge[live]" if live else ":red-badge[not live]") + " "
                    + (":green-badge[ready]" if ready else ":red-badge[not ready]"))
        if ready:
            try:
                st.dataframe(pd.DataFrame(client.get_model_repository_index()), hide_index=True, width="stretch")
            except Exception as err:  # noqa: BLE001 — PyTriton restricts the repository API
                st.caption(f":gray[The server does not list its models ({str(err)[:80]}).]")



st.subheader("Load sweep")
if loadtest is None:
    st.info("The load sweep is not in this build (core.triton.loadtest is missing).", icon=":material/info:")
else:
    pa_ok, pa_why = perf_analyzer_here()
    with st.form("sweep"):
        generator = st.radio("Load generator", loadtest.GENERATORS, horizontal=True, key="sweep_generator",
                             captions=["Python clients; transcripts compared with an in-process backend",
                                       "Triton's C++ client; no output check, one server" if pa_ok else
                                       "not installed here"],
                             help="perf_analyzer costs far less per request than Python clients, so where the two "
                                  "part, the difference is the client's. It measures until three windows in a row "
                                  "agree within 10 % (at most 10 windows of 'Max seconds per level'); the requests "
                                  "and client-process settings do not apply to it.")
        c = st.columns([2, 1, 1, 1, 1, 1])
        conc = c[0].multiselect("Concurrency", [1, 2, 4, 8, 16, 32, 64], default=[1, 2, 4, 8])
        secs = c[1].number_input("Audio seconds per request", 1.0, 60.0, 5.0)
        per_level = c[2].number_input("Max seconds per level", 1.0, 300.0, 10.0)
        requests = c[3].number_input("Max requests per level", 1, 100000, 200)
        model_name = c[4].text_input("Model name", value=local.model_name if local else "asr")
        procs = c[5].number_input("Client processes (0: auto)", 0, 64, 0, help="Split each level's clients over this many "
                                  "processes: one Python process sends about 500 requests/s of 5 s audio, so past "
                                  "that it, not the server, sets the pace (see client_cpu_pct). 0: a quarter of "
                                  "this machine's cores, at most one per client.")
        go = st.form_submit_button("Run sweep", type="primary", icon=":material/play_arrow:", disabled=not (conc and ready))
        if not ready:
            st.caption(f"No ready Triton server at {url}: start one above or connect to one.")
    if go and generator == "perf_analyzer" and not pa_ok:
        st.error(pa_why, icon=":material/error:")
        go = False
    if go:  # a background job (python -m core sweep): leaving or reloading the page does not lose it
        args = ["sweep", "--model", loaded.source, "--url", url.removeprefix("http://"), "--protocol", "http",
                "--model-name", model_name, "--concurrency", *[str(c) for c in sorted(conc)],
                "--requests", str(int(requests)), "--seconds", f"{per_level:g}", "--audio-seconds", f"{secs:g}",
                *(["--client-processes", str(int(procs))] if procs else []), "--load-generator", generator]
        if local:
            args += ["--served-backend", local.backend]
        st.session_state["sweep_job"] = jobs.start(args, label=f"Sweep · {url} · c={sorted(conc)} · {generator}").id

    @st.fragment(run_every=1.0)
    def sweep_job():
        follow_job("sweep_job", ("sweep_run",), "sweep")

    sweep_job()
    run_id = st.session_state.get("sweep_run")
    rows = result_rows(run_id) if run_id else []

    if rows:
        if any(r.get("errors") for r in rows):
            st.warning("Some requests failed: see the errors column.", icon=":material/warning:")
        if bound := [int(r["concurrency"]) for r in rows if r.get("client_bound")]:
            st.warning(f"At concurrency {', '.join(map(str, bound))} a load-generator process used a full core: the "
                       "client, not the server, may have set the pace. Raise the client processes and sweep again.",
                       icon=":material/speed:")
        c = st.columns(2)
        c[0].plotly_chart(charts.serving_curve(rows), width="stretch")
        c[1].plotly_chart(charts.queue_compute(rows), width="stretch")
        cols = ["load_generator", "concurrency", "n", "errors", "items_per_s", "audio_s_per_s", "p50_ms", "p90_ms", "p99_ms",
                "in_flight", "consistency", "server_avg_batch", "server_queue_ms", "server_compute_ms", "server_io_ms",
                "outside_server_ms", "client_cpu_pct"]
        df = pd.DataFrame(rows)
        st.dataframe(df[[c for c in cols if c in df]], hide_index=True, width="stretch")
        st.caption(":gray[in_flight: requests outstanding on average (Little's law), the concurrency the clients "
                   "kept up; outside_server_ms: a request's mean latency less its time in the server (transport, "
                   "serialisation, the client's own work before the answer is read).]")
        loads = [dict(g, concurrency=r["concurrency"]) for r in rows for g in (r.get("gpu_load") or [])]
        if loads:  # one bar per GPU and level: are all chosen GPUs busy, or does one do the work?
            gl = pd.DataFrame(loads).assign(gpu=lambda d: "GPU " + d["gpu"].astype(str))
            st.plotly_chart(px.bar(gl, x="concurrency", y="util_mean_pct", color="gpu", barmode="group",
                                   title="GPU utilisation per level (NVML, sampled every 0.1 s)",
                                   labels={"util_mean_pct": "mean utilisation %"}).update_xaxes(type="category"),
                            width="stretch", key="gpu_load_chart")
            cols = ["concurrency", "gpu", "name", "util_mean_pct", "util_max_pct", "mem_util_mean_pct",
                    "mem_used_max_mb", "sm_clock_mean_mhz", "sm_clock_min_mhz", "samples"]   # clocks: since 2026-12-07
            st.dataframe(gl[[c for c in cols if c in gl]], hide_index=True, width="stretch")
        elif reasons := sorted({r["gpu_load_reason"] for r in rows if r.get("gpu_load_reason")}):
            st.caption(f":gray[No per-GPU load: {'; '.join(reasons)}.]")
