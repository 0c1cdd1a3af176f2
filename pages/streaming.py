"""Streaming: a long file fed chunk by chunk as if it arrived in real time (core.streaming; the CLI equivalent is
`python -m core stream FILE`): per-chunk latency, lag behind real time, and the transcript as it grew."""
import html

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import charts
from core.audio import SUPPORTED, load_audio
from core.paths import DEMO_TESTSET
from core.streaming import demo_long, stream
from pages._shared import active_model, available_backends, backend, default_backends, guarded, model_badge

st.title("Streaming")
loaded = active_model()
model_badge(loaded)
st.caption("Buffered CTC, as NeMo does it: each step runs the model on [left context | chunk | right context] and "
           "keeps the chunk's frames only. A chunk's text can appear once its right context (look-ahead) has arrived; "
           "arrival is simulated with a clock, so the lag is look-ahead + waiting for earlier chunks + compute.")

source = None
tab_demo, tab_up = st.tabs([":material/library_music: Demo clips", ":material/upload: Upload"])
with tab_demo:
    if DEMO_TESTSET.exists():
        secs = st.slider("Seconds of held-out demo clips, joined into one file", 10, 90, 40, key="stream_demo_s")
        use_demo = st.toggle("Stream the joined demo clips", value=True, key="stream_use_demo")
    else:
        use_demo = False
        st.info("No shipped examples in this checkout (data/demo_testset is missing): upload a file.",
                icon=":material/info:")
with tab_up:
    up = st.file_uploader("A long audio file", type=list(SUPPORTED), key="stream_upload")
    if up is not None:
        st.caption("The uploaded file is streamed (it takes precedence over the demo clips).")

c = st.columns([2, 1, 1, 1])
specs = available_backends()
first = default_backends(loaded, 1)
spec = c[0].selectbox("Backend", specs, index=specs.index(first[0]) if first else 0, key="stream_backend")
chunk_s = c[1].number_input("Chunk (s)", 0.1, 60.0, 2.0, step=0.5, key="stream_chunk_s")
left_s = c[2].number_input("Left context (s)", 0.0, 60.0, 4.0, step=0.5, key="stream_left_s")
right_s = c[3].number_input("Right context (s)", 0.0, 10.0, 1.0, step=0.25, key="stream_right_s",
                            help="Look-ahead: a chunk waits for this much audio after it before it runs")
go_clicked = st.button("Stream", type="primary", icon=":material/play_arrow:",
                       disabled=not (spec and (up is not None or use_demo)))

if go_clicked:
    with guarded():
        reference = None
        if up is not None:
            audio = load_audio(up.getvalue(), loaded.sample_rate, name=up.name)
        else:
            audio, reference = demo_long(loaded.sample_rate, float(secs))
        be = backend(loaded, spec)
        bar = st.progress(0.0, text=f"Streaming {audio.name} ({audio.duration:.1f} s) on {spec} …")
        live = st.empty()
        n = max(1, round(audio.duration / chunk_s))

        def show(row):  # the transcript as it grows, chunk by chunk
            bar.progress(min(1.0, (row["chunk"] + 1) / n), text=f"chunk {row['chunk'] + 1}: audio up to "
                         f"{row['audio_end_s']:.1f} s, {row['compute_ms']:.0f} ms, lag {row['lag_s']:.2f} s")
            live.markdown(f'<div class="transcript">{html.escape(row["text"]) or "…"}</div>', unsafe_allow_html=True)
        result = stream(audio, be, loaded, chunk_s, left_s, right_s, progress=show)
        bar.empty()
        live.empty()
        st.session_state["stream_result"] = {"result": result, "reference": reference, "backend": spec}

done = st.session_state.get("stream_result")
if done:
    r, s = done["result"], done["result"].summary()
    if loaded.random_weights:
        st.warning("Random-weight model: the transcripts are noise — compare latency only.", icon=":material/casino:")
    st.markdown(f"**{r.audio_name}** · {r.audio_s:.1f} s · `{r.backend}` · chunk {r.chunk_s:g} s, left {r.left_s:g} s, "
                f"right {r.right_s:g} s · {s['chunks']} chunks")
    m = st.columns(5)
    m[0].metric("Compute p50", f"{s['p50_ms']:.0f} ms")
    m[1].metric("Compute p99", f"{s['p99_ms']:.0f} ms")
    m[2].metric("Lag p50", f"{s['lag_p50_s']:.2f} s", help="Text available minus the chunk's audio end")
    m[3].metric("Lag p99", f"{s['lag_p99_s']:.2f} s")
    m[4].metric("WER vs offline", "—" if r.wer is None else f"{r.wer:.1%}", help=r.score_note or
                "The streamed transcript scored against the offline transcription of the same file")
    if s["rtf"] > 1:
        st.warning(f"Compute takes {s['rtf']:.2f} s per audio second: this backend cannot keep up, the lag grows "
                   "with every chunk.", icon=":material/warning:")
    df = pd.DataFrame(r.chunks)
    fig = go.Figure()
    fig.add_bar(x=df["audio_end_s"], y=df["compute_ms"], name="compute (ms)")
    fig.add_scatter(x=df["audio_end_s"], y=df["lag_s"], name="lag (s)", yaxis="y2", mode="lines+markers")
    fig.update_layout(title="Per chunk: compute latency and lag behind real time", xaxis_title="chunk's audio end (s)",
                      yaxis_title="compute ms", yaxis2=dict(title="lag s", overlaying="y", side="right"),
                      height=340, margin=dict(t=50, b=40), legend=dict(orientation="h"))
    st.plotly_chart(fig, width="stretch", key="stream_chart")
    at = st.slider("Transcript as it stood at (s since the stream began)", 0.0, float(df["available_s"].max()),
                   float(df["available_s"].max()), step=0.1, key="stream_at")
    shown = df[df["available_s"] <= at]
    text = shown["text"].iloc[-1] if len(shown) else ""
    st.markdown(f'<div class="transcript">{html.escape(text) or "∅ (nothing yet)"}</div>', unsafe_allow_html=True)
    if r.offline_text is not None:
        st.markdown("**Offline transcription, differences from the stream marked**")
        st.markdown(f'<div class="transcript">{charts.diff_html(r.offline_text, r.text)}</div>',
                    unsafe_allow_html=True)
    if done["reference"]:
        st.caption(f"Reference of the joined clips: {done['reference']}")
    st.dataframe(df.drop(columns=["text"]), hide_index=True, width="stretch",
                 column_config={"compute_ms": st.column_config.NumberColumn(format="%.1f")})
    st.caption(f"Same as `python -m core stream FILE --backend {r.backend} --chunk-s {r.chunk_s:g} --left-s "
               f"{r.left_s:g} --right-s {r.right_s:g}` (which also saves a run to the results database).")
