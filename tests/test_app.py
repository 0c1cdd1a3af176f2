"""Every dashboard page through Streamlit's AppTest on the tiny model: renders, key widgets, and the real
UI paths of a transcription, a small benchmark, a background build and a profile."""
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.results import runs

PAGES = ["pages/overview.py", "pages/models.py", "pages/build.py", "pages/transcribe.py", "pages/benchmark.py",
         "pages/serving.py", "pages/profile.py", "pages/streaming.py"]


@pytest.fixture(scope="module", autouse=True)
def tiny_default():
    old = os.environ.get("WORKBENCH_DEFAULT_MODEL")
    os.environ["WORKBENCH_DEFAULT_MODEL"] = "random:wav2vec2-tiny"
    yield
    if old is None:
        os.environ.pop("WORKBENCH_DEFAULT_MODEL")
    else:
        os.environ["WORKBENCH_DEFAULT_MODEL"] = old


@pytest.fixture(scope="module", autouse=True)
def navigation_mode(server_navigation):
    """Every test here runs the app as a server would (conftest.server_navigation)."""


@pytest.fixture(scope="module")
def app():
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def page(at, path):
    at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_sidebar_shows_model_device_runtimes(app):
    side = " ".join(m.value for m in app.sidebar.markdown)
    assert "random weights" in side and "wav2vec2-tiny" in side  # the active model and its label
    assert "CPU" in side and ":green-badge[torch]" in side and ":green-badge[ort]" in side  # device, runtimes


def test_every_page_renders(app):
    for path in PAGES:
        page(app, path)
        assert app.title, path
        assert "wav2vec2-tiny" in " ".join(m.value for m in app.sidebar.markdown), path


def test_models_page_shows_the_model_and_switches(app):
    page(app, "pages/models.py")
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Vocabulary"] and metrics["Sample rate"] == "16 kHz" and metrics["Parameters"].endswith("M")
    app.segmented_control(key="model_kind").set_value("Local folder").run()
    app.text_input[0].set_value("/no/such/model").run()
    app.button[0].click().run()
    missing = [e.value for e in app.error]
    assert any("No saved Hugging Face model at /no/such/model" in e for e in missing)  # a clear message
    assert not app.exception
    app.text_input[0].set_value("/etc").run()           # exists, but is no model: the same words, so the page
    app.button[0].click().run()                         # does not reveal which server paths exist
    assert [e.value.replace("/etc", "/no/such/model") for e in app.error] == missing
    app.segmented_control(key="model_kind").set_value("Demo model (offline)").run()
    next(b for b in app.button if b.label == "Use this model").click().run()
    side = " ".join(m.value for m in app.sidebar.markdown)
    assert "synthetic-speech demo model" in side and "wav2vec2-tiny" not in side   # the sidebar follows at once
    app.session_state["model_source"] = "random:wav2vec2-tiny"   # the other tests of this module use the tiny model
    app.run()


def test_unbuilt_backend_says_how_to_build_it(app, hindi_wav):
    """Asking for a backend never builds: the page says the artifact is missing and how to build it."""
    page(app, "pages/transcribe.py")
    app.file_uploader(key="uploads").set_value((hindi_wav.name, hindi_wav.read_bytes(), "audio/wav")).run()
    app.multiselect(key="transcribe_backends").set_value(["ort:int8:cpu"]).run()
    next(b for b in app.button if b.label == "Transcribe").click().run()
    assert not app.exception
    shown = " ".join(e.value for e in app.error)
    assert "not built yet" in shown and "python -m core build int8" in shown


def test_preselected_backends_run_on_the_model_as_built(tiny, tmp_path, monkeypatch):
    """The Transcribe page pre-selects only backends that can run now: ort:fp32:cpu once its ONNX export of this
    model is built, not before (a first click would end in "not built yet")."""
    from core.pipeline.onnx_build import build_onnx
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(tmp_path))   # nothing built here yet

    def preselected():
        at = AppTest.from_file("../app.py", default_timeout=120)
        at.run()
        return page(at, "pages/transcribe.py").multiselect(key="transcribe_backends").value

    assert preselected() == ["torch:fp32:cpu"]
    build_onnx(tiny, log=lambda *_: None)
    assert preselected() == ["torch:fp32:cpu", "ort:fp32:cpu"]


def test_transcribe_two_backends_with_reference(app, hindi_wav, tiny_onnx):
    page(app, "pages/transcribe.py")
    app.file_uploader(key="uploads").set_value((hindi_wav.name, hindi_wav.read_bytes(), "audio/wav")).run()
    app.multiselect(key="transcribe_backends").set_value(["torch:fp32:cpu", "ort:fp32:cpu"]).run()
    app.text_input(key="reference").set_value("नमस्ते आज मौसम बहुत अच्छा है").run()
    next(b for b in app.button if b.label == "Transcribe").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    results = app.session_state["transcripts"]
    assert [r["backend"] for r in results] == ["torch:fp32:cpu", "ort:fp32:cpu"]
    assert all(r["latency_ms"] > 0 and 0 <= r["cer"] for r in results)
    shown = " ".join(m.value for m in app.markdown)
    assert "`torch:fp32:cpu`" in shown and "`ort:fp32:cpu`" in shown
    assert app.get("plotly_chart")  # the latency chart


def test_a_bad_upload_beside_a_good_one(app, hindi_wav, tiny_onnx):
    """The good clip is transcribed, the bad one is reported outside the status box by its name."""
    page(app, "pages/transcribe.py")
    app.file_uploader(key="uploads").set_value([(hindi_wav.name, hindi_wav.read_bytes(), "audio/wav"),
                                                 ("broken.wav", b"not audio" * 100, "audio/wav")]).run()
    app.multiselect(key="transcribe_backends").set_value(["torch:fp32:cpu"]).run()
    next(b for b in app.button if b.label == "Transcribe").click().run()
    assert not app.exception
    assert [r["audio"] for r in app.session_state["transcripts"]] == [hindi_wav.name]
    assert any("Cannot decode broken.wav" in e.value and "BytesIO" not in e.value for e in app.error)


def test_small_benchmark_saves_a_run(app, hindi_wav, tmp_path, tiny_onnx):
    manifest = tmp_path / "set.tsv"
    manifest.write_text(f"path\tsentence\n{hindi_wav}\tनमस्ते आज मौसम बहुत अच्छा है\n", encoding="utf-8")
    before = len(runs())
    page(app, "pages/benchmark.py")
    ms = app.multiselect
    ms[0].set_value(["torch:fp32:cpu", "ort:fp32:cpu"])
    ms[1].set_value([1])
    ms[2].set_value([1, 2])
    app.number_input[0].set_value(1)
    app.number_input[1].set_value(3)
    app.text_input[0].set_value(str(manifest))
    app.button[0].click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    job = jobs.get(app.session_state["bench_job"])   # measured in a background job, not inside the page
    assert job.state()["command"][:3] == ["bench", "--model", "random:wav2vec2-tiny"]
    page(app, "pages/overview.py")                    # leave the page while it runs: the job goes on
    assert job.wait(timeout=240)["status"] == "done", job.log()
    page(app, "pages/benchmark.py")
    app.run()
    assert len(runs()) == before + 1
    data = app.session_state["bench_run"]
    assert any("saved as run" in m.value for m in app.success)
    from core.results import rows
    got = rows(data)
    assert {(r["backend"], r["batch"], r["scope"]) for r in got if r["kind"] == "latency"} == \
        {(b, n, s) for b in ("torch:fp32:cpu", "ort:fp32:cpu") for n in (1, 2) for s in ("compute", "e2e")}
    assert sum(r["kind"] == "accuracy" for r in got) == 2 and sum(r["kind"] == "memory" for r in got) == 2
    assert runs()[0]["kind"] == "benchmark"
    assert app.selectbox(key="bench_pick").value == data  # the run just measured is shown
    assert app.radio(key="bench_view_scope").options == ["compute", "e2e"]
    assert len(app.get("plotly_chart")) >= 6
    assert [d.label for d in app.get("download_button")] == ["CSV", "JSON", "Report (HTML)", "Report (MD)"]
    app.radio(key="bench_view_scope").set_value("e2e").run()
    assert not app.exception and "e2e" in app.get("plotly_chart")[0].proto.spec
    app.button[0].click().run()  # a second run: the two can be compared
    assert jobs.get(app.session_state["bench_job"]).wait(timeout=240)["status"] == "done"
    app.run()
    assert len(runs()) == before + 2
    assert [s.label for s in app.selectbox] == ["Run", "Run A", "Run B"]
    compare = app.get("plotly_chart")[-1].proto.spec
    assert "p50 latency" in compare and "torch:fp32:cpu" in compare
    page(app, "pages/overview.py")  # the overview shows the newest run
    assert app.selectbox(key="overview_pick").value == runs()[0]["id"] and app.get("plotly_chart")


def test_run_picker_opens_on_the_newest_usable_run(app):
    """A newer failed sweep and a newer empty run are listed (or not) but never the default; picking another run
    re-renders it with its own charts."""
    from core.results import save
    nan = float("nan")

    def lat(backend, scope, p50):
        return {"kind": "latency", "scope": scope, "backend": backend, "audio_s": 1.0, "batch": 1, "p50_ms": p50,
                "p90_ms": p50, "p99_ms": p50, "p50_ci95_ms": [p50 * 0.9, p50 * 1.1], "stable": True,
                "cold_start_s": 0.5, "peak_mem_mb": 100.0, "mem_scope": "host", "audio_s_per_s": 1e3 / p50}
    conformance = save([{"kind": "conformance", "backend": "ort:fp32:cpu", "batch": b, "cell": f"1 s × {b}",
                         "max_abs_dlogit": 1e-5, "passed": b < 4} for b in (1, 2, 4)], "conformance")
    good = save([lat("torch:fp32:cpu", "compute", 9.0), lat("torch:fp32:cpu", "e2e", 12.0),
                 {"kind": "memory", "backend": "torch:fp32:cpu", "peak_mem_mb": 100.0, "mem_scope": "host"}],
                "benchmark", "usable")
    sweep_ok = save([{"kind": "sweep", "backend": "triton:fp32:http", "concurrency": c, "n": 10, "errors": 0,
                      "p50_ms": 5.0 * c, "p99_ms": 8.0 * c, "items_per_s": 50.0 * c} for c in (1, 2)], "sweep")
    failed = save([{"kind": "sweep", "backend": "triton:fp32:http", "concurrency": c, "n": 0, "errors": 7,
                    "p50_ms": nan, "p99_ms": nan, "items_per_s": 0.0} for c in (1, 2, 4, 8)], "sweep", "server down")
    save([], "latency", "nothing measured")
    for path, key in (("pages/overview.py", "overview_pick"), ("pages/benchmark.py", "bench_pick")):
        page(app, path)
        picker = app.selectbox(key=key)
        assert picker.value == sweep_ok, path  # newer than `good`; `failed` and the empty run are newer still
        assert any(o.startswith(f"#{failed} ·") and "4 sweep (4 failed)" in o for o in picker.options)
        shown = " ".join(c.proto.spec for c in app.get("plotly_chart"))
        assert "Throughput vs latency" in shown and "Latency per backend" not in shown  # a sweep: serving charts
        picker.set_value(good).run()
        assert not app.exception, [e.value for e in app.exception]
        shown = " ".join(c.proto.spec for c in app.get("plotly_chart"))
        assert "Latency per backend" in shown and "Throughput vs latency" not in shown
        table = app.dataframe[0].value
        assert {"scope", "p50_ms", "p90_ms", "p99_ms", "p50_ci95_ms", "stable", "cold_start_s",
                "peak_mem_mb"} <= set(table.columns)
        picker.set_value(failed).run()  # a failed run can still be looked at, without a crash
        assert not app.exception and any("failed" in w.value for w in app.warning)
        picker.set_value(conformance).run()  # a pass/fail table, never latency bars
        assert not app.exception and not [c for c in app.get("plotly_chart")
                                          if c.key not in ("cmp_chart", "wer_rtfx")]  # page-wide charts, not the run's
        assert app.dataframe[0].value["ort:fp32:cpu"].tolist() == ["pass", "pass", "FAIL"]


def test_build_page_starts_an_export_job(app):
    page(app, "pages/build.py")
    export = next(b for b in app.button if b.label == "Export ONNX (FP32)")
    export.click().run()
    assert not app.exception
    started = [j for j in jobs.list_jobs() if j["command"][:2] == ["build", "onnx"]]
    assert started and started[0]["command"][-2:] == ["--model", "random:wav2vec2-tiny"]
    state = jobs.Job(jobs.jobs_dir() / started[0]["id"]).wait(timeout=90)
    assert state["status"] == "done", state
    page(app, "pages/build.py")
    table = app.dataframe[0].value     # the ONNX section: this model's artifacts with status and gate figures
    assert "verified" in list(table["status"]) and table["max_abs_dlogit"].notna().all()
    assert any("onnx-fp32-" in a for a in app.dataframe[-1].value["artifact"])


def test_profile_page_operator_table(app):
    page(app, "pages/profile.py")
    next(b for b in app.button if b.label.startswith("Profile")).click().run()
    assert not app.exception and not app.error
    table = app.session_state["op_table"]
    assert table["self_cpu_ms"].is_monotonic_decreasing and len(table) > 3


def test_serving_page_warns_when_the_client_set_the_pace(app):
    from core.results import save
    run = save([{"kind": "sweep", "backend": "triton:fp32:grpc", "concurrency": c, "n": 100, "errors": 0,
                 "p50_ms": 5.0 * c, "p90_ms": 6.0 * c, "p99_ms": 8.0 * c, "items_per_s": 100.0 * c,
                 "audio_s_per_s": 500.0 * c, "client_cpu_pct": cpu, "client_processes": 1, "client_bound": cpu >= 90}
                for c, cpu in ((8, 55.0), (32, 99.0))], "sweep")
    app.session_state["sweep_run"] = run
    page(app, "pages/serving.py")
    warned = [w.value for w in app.warning if "load-generator process" in w.value]
    assert warned == ["At concurrency 32 a load-generator process used a full core: the client, not the server, may "
                      "have set the pace. Raise the client processes and sweep again."]


def test_serving_start_sweep_stop_a_real_triton_server(tiny_onnx):
    """PyTriton's real Triton server on the tiny model (ONNX Runtime CPU), a two-level sweep, then stop."""
    from core.triton import server
    at = AppTest.from_file("../app.py", default_timeout=180)
    at.run()
    page(at, "pages/serving.py")
    try:
        at.selectbox(key="serve_backend").set_value("ort:fp32:cpu")
        at.number_input(key="serve_warmup").set_value(1.0)
        next(b for b in at.button if b.label == "Start server").click().run()
        assert not at.error, [e.value for e in at.error]
        assert server.read_state("default") is not None
        assert "WARMED batch sizes [1, 2, 4, 8] at 1 s" in Path(server.read_state("default").log).read_text()
        assert ":green-badge[live] :green-badge[ready]" in [m.value for m in at.markdown]
        at.multiselect[0].set_value([1, 2])
        at.number_input[1].set_value(2.0)  # seconds per level
        next(n for n in at.number_input if n.label == "Client processes (0: auto)").set_value(2)
        next(b for b in at.button if b.label == "Run sweep").click().run()
        assert not at.error, [e.value for e in at.error]
        job = jobs.get(at.session_state["sweep_job"])       # a background job: it outlives the page
        assert job.state()["command"][:2] == ["sweep", "--model"]
        page(at, "pages/overview.py")                         # leave the page while it runs
        assert job.wait(timeout=240)["status"] == "done", job.log()
        page(at, "pages/serving.py")                          # back: the finished sweep is shown
        at.run()
        assert any("Sweep done — saved as run" in m.value for m in at.success)
        from core.results import rows as result_rows
        rows = result_rows(at.session_state["sweep_run"])
        assert [r["concurrency"] for r in rows] == [1, 2]
        assert [r["client_processes"] for r in rows] == [1, 2]   # 2 asked for; one client needs one process
        assert all(r["n"] > 0 and r["errors"] == 0 and r["server_stats"] for r in rows)
        assert {r["load_generator"] for r in rows} == {"workbench"}
        assert len(at.get("plotly_chart")) == 2
        at.radio(key="sweep_generator").set_value("perf_analyzer")   # Triton's C++ client, the same server
        at.multiselect[0].set_value([1])   # one client: steady enough on two shared cores for its 10 % margin
        next(b for b in at.button if b.label == "Run sweep").click().run()
        assert not at.error, [e.value for e in at.error]
        job = jobs.get(at.session_state["sweep_job"])
        command = job.state()["command"]
        assert command[command.index("--load-generator") + 1] == "perf_analyzer"
        assert job.wait(timeout=240)["status"] == "done", job.log()
        at.run()
        [row] = result_rows(at.session_state["sweep_run"])
        assert row["load_generator"] == "perf_analyzer" and row["n"] > 0 and row["errors"] == 0
        assert "perf_analyzer" in at.dataframe[-1].value["load_generator"].tolist()
        next(b for b in at.button if b.label == "Stop server").click().run()
        assert server.read_state("default") is None
        assert any(b.label == "Start server" for b in at.button)
    finally:
        server.stop("default")


def test_serving_page_starts_a_process_per_instance():
    """The Python-backend toggle: Triton starts each of two instances as its own process, and the page sees it ready."""
    from core.triton import server
    at = AppTest.from_file("../app.py", default_timeout=180)
    at.run()
    page(at, "pages/serving.py")
    try:
        at.selectbox(key="serve_backend").set_value("torch:fp32:cpu")
        at.number_input(key="serve_instances").set_value(2)
        assert at.multiselect(key="serve_gpus").disabled          # a CPU backend: no GPUs to choose
        at.toggle(key="serve_pybackend").set_value(True)
        assert at.selectbox(key="serve_input_dtype").value == "auto"
        at.selectbox(key="serve_input_dtype").set_value("fp16")  # FP16 audio for an FP32 backend: asked, so served
        at.text_input(key="serve_preferred").set_value("9")        # above max batch 8: one clear error, no server
        next(b for b in at.button if b.label == "Start server").click().run()
        assert any("outside 1..8" in e.value for e in at.error) and server.read_state("default") is None
        at.text_input(key="serve_preferred").set_value("2, 4")
        next(b for b in at.button if b.label == "Start server").click().run()
        assert not at.error, [e.value for e in at.error]
        info = server.read_state("default")
        assert "PLACED 2 instance process(es) on the CPU (Triton Python backend)" in Path(info.log).read_text()
        import tritonclient.http as http
        config = http.InferenceServerClient(info.url("http")).get_model_config("asr")
        assert config["dynamic_batching"]["preferred_batch_size"] == [2, 4]
        inputs = http.InferenceServerClient(info.url("http")).get_model_metadata("asr")["inputs"]
        assert [i["datatype"] for i in inputs if i["name"] == "input_values"] == ["FP16"]
        at.run()
        assert any(s.value.startswith("Running: model **asr** (torch:fp32:cpu, ") and ", FP16 audio)" in s.value
                   for s in at.success)
        assert ":green-badge[live] :green-badge[ready]" in [m.value for m in at.markdown]
    finally:
        server.stop("default")


def test_serving_page_reports_no_server():
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.run()
    page(at, "pages/serving.py")
    at.text_input(key="triton_url").set_value("localhost:1").run()
    assert "not live" in " ".join(m.value for m in at.markdown)


def test_real_default_is_load_model_none_with_visible_fallback(monkeypatch):
    """No WORKBENCH_DEFAULT_MODEL: load_model(None) (Hub offline here -> demo model); without the demo model the
    app falls back to the tiny random model and says so."""
    from core.paths import DEMO_MODEL_DIR
    monkeypatch.delenv("WORKBENCH_DEFAULT_MODEL")
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.run()
    assert not at.exception
    side = " ".join(m.value for m in at.sidebar.markdown)
    if (DEMO_MODEL_DIR / "config.json").exists():
        assert "synthetic-speech demo model" in side
    else:
        assert "wav2vec2-tiny" in side
        assert any("No default model could be loaded" in w.value for w in at.sidebar.warning)


def test_transcribe_a_shipped_sample_in_one_click(app):
    from core.paths import DEMO_TESTSET
    from core.wer import load_manifest
    if not DEMO_TESTSET.exists():
        pytest.skip(f"{DEMO_TESTSET} is not in this checkout")
    path, text = load_manifest(DEMO_TESTSET)[0]
    page(app, "pages/transcribe.py")
    app.file_uploader(key="uploads").set_value(None).run()
    app.get("button_group")[0].set_value(path.name).run()
    assert app.text_input(key="reference").value == text  # the reference text comes with the sample
    app.multiselect(key="transcribe_backends").set_value(["ort:fp32:cpu"]).run()
    next(b for b in app.button if b.label == "Transcribe").click().run()
    assert not app.error, [e.value for e in app.error]
    [row] = app.session_state["transcripts"]
    assert row["audio"] == path.name and "wer" in row


def test_server_left_from_earlier_is_found_and_offered_to_stop(tiny_onnx):
    """A server started by another process (a shell, an earlier dashboard) shows in the sidebar with a Stop button
    that stops exactly that server."""
    import subprocess
    import sys
    from core.paths import REPO_ROOT
    from core.triton import server
    out = subprocess.run([sys.executable, "-m", "core", "serve", "--model", "random:wav2vec2-tiny", "--backend",
                          "ort:fp32:cpu"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    try:
        left = server.read_state("default")
        assert left is not None and left.pid not in server._CHILDREN
        at = AppTest.from_file("../app.py", default_timeout=60)
        at.run()
        assert any(f"pid {left.pid}" in w.value for w in at.sidebar.warning)
        next(b for b in at.sidebar.button if b.label == "Stop that server").click().run()
        assert server.read_state("default") is None and not server.same_process(left.identity)
        assert not any("Triton server started earlier" in w.value for w in at.sidebar.warning)
    finally:
        server.stop("default")


def test_build_page_warns_when_a_verified_artifact_fails_the_conformance_matrix(app, tiny_onnx, monkeypatch):
    """A variant's gate measures the labelled set; the conformance matrix measures every batch and length. A saved
    failing matrix run shows beside the artifact that passed its gate; a newer passing run clears it."""
    from core import check
    from core.models import load_model
    from core.results import save
    tiny = load_model("random:wav2vec2-tiny")
    small = dict(batches=[1, 2], lengths={"inside a bucket": 0.7})
    monkeypatch.setitem(check.TOLERANCES, "fp32", (0.0, 0.99, 0.01))   # a limit no real run meets
    failing = check.run_check(tiny, ["ort:fp32:cpu"], reference="torch:fp32:cpu", **small)
    assert not all(r["passed"] for r in failing)
    run_id = save(failing, "conformance")
    page(app, "pages/build.py")
    warned = [w.value for w in app.warning if "conformance matrix" in w.value]
    assert warned and f"run {run_id}" in warned[0] and "`ort:fp32:cpu` fails" in warned[0]
    monkeypatch.undo()
    save(check.run_check(tiny, ["ort:fp32:cpu"], reference="torch:fp32:cpu", **small), "conformance")
    page(app, "pages/build.py")
    assert not [w.value for w in app.warning if "conformance matrix" in w.value]
