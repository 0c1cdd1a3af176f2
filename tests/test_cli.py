"""The CLI as a user runs it: real subprocesses, real files, exit codes and messages."""
import json
import os
import subprocess
import sys

import pytest

from core.paths import REPO_ROOT


def cli(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                         env=os.environ.copy(), timeout=300)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_help_lists_every_job():
    out = cli("--help").stdout
    for cmd in ("export", "transcribe", "bench", "check", "wer", "info", "results"):
        assert cmd in out
    assert "--seconds" in cli("bench", "--help").stdout


def test_export_transcribe_bench_wer(hindi_wav, tmp_path):
    model = ["--model", "random:wav2vec2-tiny"]
    assert '"max_abs_dlogit"' in cli("export", *model).stdout
    out = cli("transcribe", str(hindi_wav), *model, "--backend", "torch:fp32:cpu", "--backend", "ort:fp32:cpu",
              "--reference", "नमस्ते आज मौसम बहुत अच्छा है").stdout
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]
    bench = cli("bench", *model, "--backend", "ort:fp32:cpu", "--seconds", "1", "2", "--batch", "1", "2",
                "--repeats", "5", "--warmup", "1")
    assert "p50_ms" in bench.stdout and "random weights" in bench.stdout and "saved as run" in bench.stderr
    # 2 lengths x 2 batches x 2 scopes
    lines = [line.split() for line in bench.stdout.splitlines() if line.strip().startswith("ort:fp32:cpu")]
    assert len(lines) == 8 and {line[1] for line in lines} == {"compute", "e2e"}
    rows = json.loads(cli("bench", *model, "--backend", "ort:fp32:cpu", "--seconds", "1", "--batch", "2",
                          "--repeats", "5", "--warmup", "1", "--scope", "e2e", "--json", "--no-save").stdout)
    latency = [r for r in rows if r["kind"] == "latency"]
    assert len(latency) == 1 and latency[0]["scope"] == "e2e"
    for key in ("p50_ms", "p90_ms", "p99_ms", "p50_ci95_ms", "stable", "cold_start_s", "peak_mem_mb"):
        assert latency[0][key] is not None, key
    lo, hi = latency[0]["p50_ci95_ms"]
    assert lo <= latency[0]["p50_ms"] <= hi and latency[0]["cold_start_s"] > latency[0]["load_s"] > 0
    assert [r["kind"] for r in rows].count("memory") == 1
    manifest = tmp_path / "m.tsv"
    manifest.write_text(f"path\tsentence\n{hindi_wav}\tनमस्ते आज मौसम बहुत अच्छा है\n", encoding="utf-8")
    wer = cli("wer", *model, "--backend", "ort:fp32:cpu", "--manifest", str(manifest))
    assert "meaningless" in wer.stderr and "ort:fp32:cpu" in wer.stdout
    runs = cli("results").stdout
    assert "latency" in runs and "accuracy" in runs


@pytest.mark.parametrize("args,message", [
    (["transcribe", "/no/such.wav"], "Audio file not found"),
    (["export", "--model", "/no/such/model"], "No model folder"),
    (["transcribe", "pyproject.toml"], "Cannot decode"),
    (["bench", "--backend", "ort:fp32:cuda", "--seconds", "1"], "onnxruntime-gpu"),
    (["wer", "--manifest", "/no/manifest.tsv"], "Manifest not found"),
])
def test_errors_are_actionable(args, message):
    out = cli(*args, "--model", "random:wav2vec2-tiny", check=False) if "--model" not in args else cli(*args, check=False)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert "→" in out.stderr  # every error says what to do next


@pytest.mark.parametrize("args,message", [
    (["bench", "--seconds", "0"], "audio seconds per item must be between 0.1 and 600, not 0"),
    (["bench", "--seconds", "1e9"], "must be between 0.1 and 600, not 1e9"),
    (["bench", "--batch", "-2"], "the batch size must be between 1 and 1024, not -2"),
    (["bench", "--repeats", "0"], "repeats per measurement window must be between 3"),
    (["bench", "--warmup", "-1"], "warm-up calls must be between 0"),
    (["wer", "--limit", "-3"], "the count must be at least 1, not -3"),
    (["sweep", "--concurrency", "0"], "the concurrency must be between 1 and 1024, not 0"),
    (["bench", "--backend", "ort:fp33:cpu"],
     "unknown precision 'fp33' (known: fp32, fp16, bf16, mixed, int8, int4w, int8w, fp8)"),
    (["build", "trt", "--precision", "int8w"],    # said without TensorRT installed
     "No int8w TensorRT engine: TensorRT 10 supports weight-only quantization for INT4 only"),
    (["transcribe", "x.wav", "--triton-url", "nohost"], "expected host:port (e.g. localhost:8001), got 'nohost'"),
    (["serve", "--max-batch", "8", "--preferred", "4", "9"], "Preferred batch sizes [9] are outside 1..8 (max batch)"),
])
def test_bad_options_are_one_clear_line_before_any_work(args, message):
    out = cli(*args, check=False)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert "model:" not in out.stderr and "starting" not in out.stderr   # refused before the model was loaded


def test_triton_url_is_the_server_triton_backends_use(hindi_wav):
    """--triton-url reaches the backend: nothing listens on port 1, and the message names that address."""
    out = cli("transcribe", str(hindi_wav), "--model", "random:wav2vec2-tiny", "--backend", "triton:fp32:http",
              "--triton-url", "127.0.0.1:1", check=False)
    assert out.returncode == 2 and "127.0.0.1:1" in out.stderr and "not reachable" in out.stderr
    assert "Traceback" not in out.stderr


def test_results_on_an_empty_database(tmp_path):
    env = dict(os.environ, WORKBENCH_ARTIFACTS=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "core", "results"], cwd=REPO_ROOT, capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and "no runs saved yet" in out.stdout and "Empty DataFrame" not in out.stdout


def test_sweep_against_no_server_fails_and_saves_nothing(tmp_path):
    env = dict(os.environ, WORKBENCH_ARTIFACTS=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "core", "sweep", "--model", "random:wav2vec2-tiny", "--url",
                          "127.0.0.1:1", "--concurrency", "1", "--requests", "2", "--seconds", "2", "--timeout", "2",
                          "--reference-backend", "torch:fp32:cpu"], cwd=REPO_ROOT, capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 1 and "no request to 127.0.0.1:1 succeeded; nothing saved" in out.stderr
    assert "Traceback" not in out.stderr
    from core.results import runs
    assert runs(path=tmp_path / "results.sqlite") == []


def test_one_bad_file_does_not_stop_the_others(hindi_wav, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 50)
    out = cli("transcribe", str(bad), str(hindi_wav), "--model", "random:wav2vec2-tiny", check=False)
    assert out.returncode == 1 and "Cannot decode bad.wav" in out.stderr and "Traceback" not in out.stderr
    assert f"] {hindi_wav.name} (" in out.stdout     # the good file was still transcribed


def test_build_int8_says_its_calibration_set_is_the_evaluation_set():
    """The default INT8 calibration clips come from the labelled set the gate scores: the CLI says so (it crashed
    there, reading a field the artifact does not have)."""
    out = cli("build", "int8", "--model", "random:wav2vec2-tiny", "--calib-size", "2", check=False)
    assert out.returncode in (0, 2), out.stderr[-2000:]
    assert "note: INT8 was calibrated on clips of the evaluation manifest" in out.stderr
    assert json.loads(out.stdout[out.stdout.index("{"):])["stage"] == "onnx"


def test_transcribe_and_bench_take_backend_options_and_bench_rows_record_them(hindi_wav):
    """--option reaches the backend (a value it refuses is refused; accepted ones transcribe), bench rows carry the
    options they ran with, and a misspelt option is one clear error."""
    model = ["--model", "random:wav2vec2-tiny"]
    small = cli("transcribe", str(hindi_wav), *model, "--backend", "fast:fp32:cpu",
                "--option", "buckets_s=[1]", "--option", "batch_buckets=[1,2]").stdout
    assert [line for line in small.splitlines() if line.startswith("[fast:fp32:cpu]") and line.split(": ", 1)[1]]
    refused = cli("transcribe", str(hindi_wav), *model, "--backend", "fast:fp32:cpu", "--option", "compile=bogus",
                  check=False)
    assert refused.returncode == 2 and "Unknown compile mode 'bogus'" in refused.stderr
    rows = json.loads(cli("bench", *model, "--backend", "fast:fp32:cpu", "--seconds", "1", "--batch", "2",
                          "--repeats", "3", "--warmup", "1", "--scope", "compute", "--json", "--no-save",
                          "--option", "batch_buckets=[2]").stdout)
    assert {r["kind"] for r in rows} == {"latency", "memory"}
    assert all(r["backend_options"] == {"batch_buckets": [2]} for r in rows)
    cli("export", *model)   # the ONNX row below needs its artifact whatever ran before
    assert all("backend_options" not in r for r in json.loads(cli(
        "bench", *model, "--backend", "ort:fp32:cpu", "--seconds", "1", "--batch", "1", "--repeats", "3",
        "--warmup", "1", "--scope", "compute", "--json", "--no-save").stdout))
    bad = cli("transcribe", str(hindi_wav), *model, "--backend", "fast:fp32:cpu", "--option", "bucket_s=[1]",
              check=False)
    assert bad.returncode == 2 and "bucket_s" in bad.stderr and "Traceback" not in bad.stderr
