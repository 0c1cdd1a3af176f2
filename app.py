"""ASR inference-backend workbench — Streamlit entry point: navigation and the sidebar every page shares.
Run: `python -m streamlit run app.py` (or `bash run.sh app`)."""
from __future__ import annotations

import streamlit as st

from core.envinfo import device_label, environment
from core.hostmem import keep_freed_memory
from pages._shared import active_model, catalogue, show_error

keep_freed_memory()   # the dashboard's in-process transcriptions and benchmarks, and the jobs it starts
st.set_page_config(page_title="ASR backend workbench", page_icon=":material/graphic_eq:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/models.py", title="Models", icon=":material/neurology:"),
    st.Page("pages/build.py", title="Build", icon=":material/construction:"),
    st.Page("pages/transcribe.py", title="Transcribe", icon=":material/record_voice_over:"),
    st.Page("pages/benchmark.py", title="Benchmark", icon=":material/speed:"),
    st.Page("pages/streaming.py", title="Streaming", icon=":material/stream:"),
    st.Page("pages/serving.py", title="Serving", icon=":material/dns:"),
    st.Page("pages/profile.py", title="Profile", icon=":material/troubleshoot:"),
]
page = st.navigation(PAGES)


@st.cache_resource(show_spinner=False)
def _startup() -> int:
    """Once per dashboard process: remove the temporary folders of builds that were killed."""
    from core.pipeline.store import clean_all_temps
    return len(clean_all_temps())


_startup()


def _left_running() -> None:
    """A server or jobs left by an earlier dashboard (or a shell) are found and offered to stop: each is checked
    to be the very process recorded (PID, start time, command line) before anything is signalled."""
    from core import jobs
    from pages._shared import optional
    server = optional("core.triton.server")
    left = server.read_state("default") if server else None
    if left and left.pid not in server._CHILDREN:
        st.warning(f"A Triton server started earlier is running: {left.backend} at {left.url('http')} (pid "
                   f"{left.pid}, since {left.started}).", icon=":material/dns:")
        if st.button("Stop that server", key="stop_left_server", icon=":material/stop:"):
            server.stop(left)
            st.rerun()
    running = [j for j in jobs.list_jobs() if j.get("status") in jobs.ACTIVE]
    if running:
        st.caption(f":material/pending: {len(running)} background job(s) running: "
                   + ", ".join(j.get("label", j["id"]) for j in running[:3]) + " — cancel them on the Build page.")
st.html("""<style>
.transcript {font-size: 1.1rem; line-height: 1.7; padding: .6rem .8rem; border-radius: .5rem;
             background: #f7f8f5; border: 1px solid #e6e8e1; min-height: 3rem; word-break: break-word;}
.transcript ins, .transcript del {padding: 0 .15rem; border-radius: .2rem;}
[data-testid="stMetricValue"] {font-size: 1.9rem;}
</style>""")

with st.sidebar:
    st.markdown("### :material/graphic_eq: ASR backend workbench")
    try:
        loaded = active_model()
    except Exception as err:  # noqa: BLE001
        show_error(err)
        st.stop()
    st.markdown("**Model**")
    if loaded.random_weights:
        st.markdown(f":orange-badge[:material/casino: random weights] `{loaded.source}`")
        st.caption("Speed work only — transcripts and WER are meaningless.")
    elif loaded.kind == "demo":
        st.markdown(":blue-badge[:material/science: synthetic-speech demo model]")
        st.caption("demo-hindi-synth: trained offline on synthesised Hindi, not a general recogniser.")
    else:
        st.markdown(f":green-badge[{loaded.kind}] `{loaded.source}`")
    if st.session_state.get("model_fallback"):
        st.warning(st.session_state["model_fallback"], icon=":material/warning:")
    elif loaded.notice:
        st.caption(f":material/info: {loaded.notice}")
    env = environment()
    st.markdown("**Device**")
    st.markdown((":material/memory: " if env["gpu"] else ":material/computer: ") + device_label()
                + (f" · CC {env['gpu_cc']} · driver {env['driver']}" if env["gpu"] else ""))
    st.markdown("**Runtimes**")
    runtimes: dict[str, bool] = {}
    for b in catalogue():
        runtimes[b["backend"].split(":")[0]] = runtimes.get(b["backend"].split(":")[0], False) or b["available"]
    st.markdown(" ".join(f":green-badge[{r}]" if ok else f":gray-badge[~~{r}~~]" for r, ok in runtimes.items()))
    _left_running()
    with st.expander("Backends here"):
        for b in catalogue():
            st.markdown((":green[●] " if b["available"] else ":gray[○] ") + f"`{b['backend']}`"
                        + ("" if b["available"] else f"  \n:gray[{b['why'].split(':')[0]}]"))

page.run()
