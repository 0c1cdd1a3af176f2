"""Overview: the active model, the machine, what has been built and a stored run (the newest usable one by default)."""
import streamlit as st

from core.envinfo import device_label
from core.jobs import finished_artifacts, list_jobs
from core.results import rows, runs
from pages._runs import run_picker, show_run
from pages._shared import active_model, available_backends, catalogue, guarded, model_badge

st.title("ASR inference-backend workbench")
st.caption("One speech model, every NVIDIA deployment form — PyTorch, ONNX Runtime, TensorRT, Triton — "
           "measured side by side on this machine.")
loaded = active_model()
model_badge(loaded)
info = loaded.describe()

c = st.columns(5)
c[0].metric("Parameters", f"{info['parameters'] / 1e6:.1f} M", help=f"{info['size_mb_fp32']:,.1f} MB in FP32")
c[1].metric("Device", device_label().split(" (")[0])
c[2].metric("Backends available", f"{len(available_backends())} / {len(catalogue())}")
arts = finished_artifacts()
c[3].metric("Built artifacts", len(arts))
all_runs = runs()
c[4].metric("Result runs", len(all_runs))

left, right = st.columns([3, 2], gap="large")
with left, guarded():
    st.subheader("Results")
    picked = run_picker("overview_pick")
    if picked:
        show_run(rows(picked["id"]), "overview_view", compact=True)
    else:
        st.info("No measurements yet: run a benchmark to compare backends on this machine.",
                icon=":material/speed:")
        st.page_link("pages/benchmark.py", label="Open Benchmark", icon=":material/speed:")
with right:
    st.subheader("Get started")
    for path, label, icon in [
            ("models", "Pick a model (Hub id, folder, demo, architecture)", "neurology"),
            ("build", "Build ONNX / precision variants / TensorRT engines", "construction"),
            ("transcribe", "Transcribe audio on several backends at once", "record_voice_over"),
            ("benchmark", "Benchmark latency, throughput and WER", "speed"),
            ("serving", "Serve with Triton and load-test it", "dns"),
            ("profile", "Profile operators and graph fusions", "troubleshoot")]:
        st.page_link(f"pages/{path}.py", label=label, icon=f":material/{icon}:")
    st.subheader("Recent jobs")
    jobs = list_jobs()[:5]
    if jobs:
        st.dataframe([{"job": j.get("label"), "status": j.get("status"), "started": j.get("started")} for j in jobs],
                     hide_index=True, width="stretch")
    else:
        st.caption("No background jobs yet.")
