"""Build: ONNX export, precision variants, TensorRT engines, Triton repository — as background jobs
that survive reruns and reloads (core.jobs), with live logs and the finished artifacts' parity."""
import pandas as pd
import streamlit as st

from core import jobs
from core.backends import availability, known
from core.cli import parser
from pages._shared import active_model, guarded, model_badge, optional

st.title("Build")
loaded = active_model()
model_badge(loaded)
st.caption("Every build runs as `python -m core …` in its own process: it keeps going if you leave this page or "
           "reload, and the same command is never run twice at once.")

try:  # which `python -m core` commands this build has (optional modules add theirs)
    COMMANDS = {name for action in parser()._subparsers._group_actions for name in action.choices}
except Exception as err:  # noqa: BLE001 — a broken optional module must not take the whole page down
    COMMANDS = set()
    st.warning(f"The command line does not load ({type(err).__name__}: {err}); background builds will fail "
               "until that is fixed.", icon=":material/warning:")


def start(args: list[str], label: str) -> None:
    job = jobs.start([*args, "--model", loaded.source], label=f"{label} · {loaded.source}")
    st.toast(f"Started: {label}" if job.status in jobs.ACTIVE else f"{label}: {job.status}",
             icon=":material/rocket_launch:")


def action(col, label: str, args: list[str], help_: str, enabled: bool = True, why: str = "",
           show_why: bool = True) -> None:
    """A build button; when it cannot run here, the reason is shown instead of a dead button."""
    with col:
        if enabled:
            if st.button(label, key="build-" + "-".join(args), help=help_, width="stretch"):
                start(args, label)
        else:
            st.button(label, key="build-" + "-".join(args), disabled=True, width="stretch", help=why)
            if show_why:
                st.caption(f":gray[{why}]")


with st.container(border=True):
    st.markdown("#### :material/deployed_code: ONNX (FP32)")
    st.caption("torch.onnx export with dynamic batch/time axes, onnx.checker, shape inference, "
               "then parity against PyTorch on real speech.")
    c = st.columns(4)
    action(c[0], "Export ONNX", ["export"], "python -m core export")
    action(c[1], "Re-export (force)", ["export", "--force"], "python -m core export --force")

with st.container(border=True):
    st.markdown("#### :material/tune: Precision variants (ONNX Runtime)")
    variants = optional("core.variants")
    if variants is None or "variants" not in COMMANDS:
        st.info("Precision variants (FP16, mixed, INT8) are not in this build (core.variants is missing).",
                icon=":material/info:")
    else:
        st.caption("Derived from the FP32 export: FP16, mixed (numerically sensitive ops kept FP32), INT8 (static, "
                   "calibrated on the labelled set) — each with parity and WER/CER against FP32.")
        precisions = getattr(variants, "VARIANTS", ("fp16", "mixed", "int8"))
        c = st.columns(4)
        for i, p in enumerate(precisions):
            action(c[i], f"Build {p.upper()}", ["variants", "--precision", p], f"python -m core variants --precision {p}")
        with guarded():
            rows = [{"variant": r["variant"], "built": r["built"], "stale": r.get("stale", False),
                     **({k: v for k, v in variants.summary_row(r["meta"]).items() if k != "variant"}
                        if r["built"] and hasattr(variants, "summary_row") else {})}
                    for r in variants.variant_status(loaded)]
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

with st.container(border=True):
    st.markdown("#### :material/bolt: TensorRT engines")
    trt = optional("core.tensorrt")
    if trt is None or "trt-build" not in COMMANDS:
        st.info("TensorRT engine builds are not in this build (core.tensorrt is missing).", icon=":material/info:")
    else:
        ok, why = availability("trt:fp16:cuda")
        st.caption("Engines with optimisation profiles over batch × audio length and a persisted timing cache; an "
                   "engine only runs on the GPU and TensorRT version it was built with.")
        c = st.columns(4)
        for i, p in enumerate(getattr(trt, "PRECISIONS", ("fp32", "fp16", "mixed", "int8"))):
            action(c[i], f"Engine {p.upper()}", ["trt-build", "--precision", p],
                   f"python -m core trt-build --precision {p}", enabled=ok, why=why, show_why=False)
        if not ok:
            st.caption(f":material/block: Not on this machine: {why}.")
        with guarded():
            engines = trt.engine_status(loaded)
            if engines:
                st.dataframe(pd.DataFrame(engines).drop(columns=["meta"], errors="ignore"), hide_index=True,
                             width="stretch")

with st.container(border=True):
    st.markdown("#### :material/dns: Triton model repository")
    if optional("core.triton") is None or "triton-repo" not in COMMANDS:
        st.info("Triton serving is not in this build (core.triton is missing).", icon=":material/info:")
    else:
        st.caption("A model repository for the Triton container (config.pbtxt with dynamic batching + the model "
                   "file). Any ONNX Runtime or TensorRT backend; the instance kind follows its device.")
        specs = [s for s in known() if s.split(":")[0] in ("ort", "trt")]
        c = st.columns([2, 1, 1])
        spec = c[0].selectbox("Backend served", specs, index=specs.index("ort:fp32:cpu") if "ort:fp32:cpu" in specs else 0,
                              key="repo_backend")
        kind = "cpu" if spec.endswith(":cpu") else "gpu"
        action(c[1], "Write repository", ["triton-repo", "--backend", spec, "--kind", kind],
               f"python -m core triton-repo --backend {spec} --kind {kind}")

st.subheader("Jobs")


@st.fragment(run_every=1.5)
def job_list():
    all_jobs = jobs.list_jobs()
    active = {j["id"] for j in all_jobs if j.get("status") in jobs.ACTIVE}
    if st.session_state.get("active_jobs", set()) - active:  # one just finished: refresh the artifact list too
        st.session_state["active_jobs"] = active
        st.rerun()
    st.session_state["active_jobs"] = active
    if not all_jobs:
        st.caption("No jobs yet: press a build button above.")
        return
    for state in all_jobs[:8]:
        job = jobs.Job(jobs.jobs_dir() / state["id"])
        status = state.get("status", "unknown")
        icon = {"running": ":material/progress_activity:", "queued": ":material/schedule:",
                "done": ":material/check_circle:", "failed": ":material/error:",
                "cancelled": ":material/cancel:"}.get(status, ":material/help:")
        with st.expander(f"{icon} **{state.get('label')}** — {status}", expanded=status in jobs.ACTIVE):
            fraction, message = job.progress()
            if status in jobs.ACTIVE:
                if fraction is None:
                    st.progress(0, text=f"working … {message[-120:]}")  # no progress lines: indeterminate
                else:
                    st.progress(fraction, text=message[-120:])
                if st.button("Cancel", key=f"cancel-{state['id']}", icon=":material/stop:"):
                    job.cancel()
                    st.rerun(scope="fragment")
            elif status == "failed":
                st.error(f"exit code {state.get('exit_code')}" + (f": {state['error']}" if state.get("error") else ""))
            st.caption(f"`python -m core {' '.join(state.get('command', []))}` · started {state.get('started', '-')}"
                       f" · ended {state.get('ended', '-')}")
            st.code(job.log(6000)[-6000:] or "(no output yet)", language="text")


job_list()

st.subheader("Finished artifacts")
arts = jobs.finished_artifacts()
if arts:
    st.dataframe(pd.DataFrame(arts).drop(columns=["meta"]), hide_index=True, width="stretch",
                 column_config={"max_abs_logit_diff": st.column_config.NumberColumn("max |Δlogit|", format="%.2e")})
    pick = st.selectbox("Metadata of", [a["artifact"] for a in arts])
    st.json(next(a["meta"] for a in arts if a["artifact"] == pick), expanded=False)
else:
    st.caption("Nothing built yet.")
