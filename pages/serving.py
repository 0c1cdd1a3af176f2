"""Serving: a local Triton server (PyTriton) or any Triton URL, its health and models, and a load sweep."""
import inspect

import pandas as pd
import streamlit as st

from core import charts
from pages._shared import active_model, guarded, model_badge, optional

st.title("Serving")
loaded = active_model()
model_badge(loaded)

server = optional("core.triton.server")
loadtest = optional("core.triton.loadtest")


def call(fn, **kwargs):
    """Call a core.triton function with the keyword arguments it accepts (their APIs are still settling)."""
    params = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in kwargs.items() if k in params})


c1, c2 = st.columns(2, gap="large")
with c1, st.container(border=True):
    st.markdown("#### :material/play_circle: Local server")
    if server is None:
        st.info("Starting a local Triton server is not in this build (core.triton.server is missing). "
                "You can still connect to a running server on the right.", icon=":material/info:")
    else:
        ok, why = getattr(server, "available", lambda: (True, ""))()
        if not ok:
            st.info(f"A local server cannot start here: {why}", icon=":material/info:")
        else:
            b1, b2 = st.columns(2)
            if b1.button("Start server", type="primary", icon=":material/play_arrow:", width="stretch"):
                with guarded(), st.spinner("Starting Triton …"):
                    st.session_state["triton_url"] = str(call(server.start, loaded=loaded, model=loaded.source))
            if b2.button("Stop server", icon=":material/stop:", width="stretch"):
                with guarded():
                    call(server.stop)
with c2, st.container(border=True):
    st.markdown("#### :material/link: Connect")
    url = st.text_input("Triton HTTP URL", value=st.session_state.get("triton_url", "localhost:8000"), key="url_in")
    with guarded():
        import tritonclient.http as http
        client = http.InferenceServerClient(url.removeprefix("http://"), connection_timeout=2.0, network_timeout=5.0)
        try:
            live, ready = client.is_server_live(), client.is_server_ready()
        except Exception as err:  # noqa: BLE001 — connection refused / DNS / timeout: all mean "not reachable"
            live = ready = False
            st.caption(f":gray[No server at {url}: {type(err).__name__}]")
        st.markdown(("🟢 live" if live else "🔴 not live") + " · " + ("🟢 ready" if ready else "🔴 not ready"))
        if ready:
            st.dataframe(pd.DataFrame(client.get_model_repository_index()), hide_index=True, width="stretch")

st.subheader("Load sweep")
if loadtest is None:
    st.info("The load sweep is not in this build (core.triton.loadtest is missing).", icon=":material/info:")
else:
    with st.form("sweep"):
        c = st.columns(3)
        conc = c[0].multiselect("Concurrency", [1, 2, 4, 8, 16, 32, 64], default=[1, 2, 4, 8])
        secs = c[1].number_input("Audio seconds per request", 1.0, 60.0, 5.0)
        dur = c[2].number_input("Seconds per level", 2.0, 120.0, 5.0)
        go = st.form_submit_button("Run sweep", type="primary", icon=":material/play_arrow:")
    if go:
        with guarded(), st.status("Sweeping concurrency …") as s:
            rows = call(loadtest.sweep, url=url, loaded=loaded, concurrency=sorted(conc), concurrencies=sorted(conc),
                        audio_s=secs, seconds=secs, duration_s=dur, duration=dur)
            st.session_state["sweep"] = rows
            s.update(label=f"{len(rows)} levels measured", state="complete")
    rows = st.session_state.get("sweep") or []
    if rows:
        c = st.columns(2)
        c[0].plotly_chart(charts.serving_curve(rows), width="stretch")
        c[1].plotly_chart(charts.queue_compute(rows), width="stretch")
        st.dataframe(pd.DataFrame(rows).drop(columns=["env"], errors="ignore"), hide_index=True, width="stretch")
