"""Transcribe: the same audio through several backends, transcripts side by side, differences highlighted."""
import html

import numpy as np
import pandas as pd
import streamlit as st

from core import charts
from core.audio import SUPPORTED, load_audio
from core.paths import DEMO_TESTSET
from core.transcribe import transcribe
from core.wer import load_manifest, scores
from core.errors import WorkbenchError
from pages._shared import active_model, available_backends, backend, default_backends, model_badge, show_error

st.title("Transcribe")
loaded = active_model()
model_badge(loaded)

clips: list[tuple[str, bytes]] = []
tab_up, tab_rec, tab_mic, tab_samples = st.tabs([":material/upload: Upload", ":material/mic: Record in browser",
                                                  ":material/settings_voice: Server microphone",
                                                  ":material/library_music: Samples"])
with tab_up:
    for f in st.file_uploader("Audio files", type=list(SUPPORTED), accept_multiple_files=True, key="uploads") or []:
        clips.append((f.name, f.getvalue()))
with tab_rec:
    rec = st.audio_input("Record a clip", key="browser_rec")
    if rec is not None:
        clips.append(("browser recording.wav", rec.getvalue()))
with tab_mic:  # the machine the workbench runs on (a workstation); on a server, the browser tab is the way
    from core import microphone
    take = st.session_state.pop("mic_take", None)
    if take is not None and take.blocks:  # a Stop click interrupted the recording run: keep what it recorded
        take.stopped_early = True
        st.session_state["server_rec"] = take
    try:
        devices = microphone.input_devices(rescan=st.button("Rescan devices", icon=":material/refresh:"))
    except WorkbenchError as err:
        devices = []
        st.info(f"**Server microphone off: {err.message}**\n\n→ {err.hint}", icon=":material/mic_off:")
    if devices:
        c1, c2 = st.columns([3, 2])
        labels = [d.label for d in devices]
        dev = devices[labels.index(c1.selectbox("Input device (default sample rate)", labels, key="mic_device"))]
        secs = c2.slider("Length (s)", 1, 120, 5, key="mic_seconds", help="Stop ends the recording earlier")
        if st.button("Record", icon=":material/fiber_manual_record:", key="mic_record"):
            st.button("Stop", icon=":material/stop:", key="mic_stop")  # its click reruns the page: see above
            meter, clock = st.empty(), st.empty()

            def show(t):  # the level meter and the countdown; the take is kept in case a Stop click interrupts
                st.session_state["mic_take"] = t
                meter.progress(t.meter, text=f"level {20 * np.log10(max(t.level, 1e-6)):.0f} dBFS")
                clock.markdown(f":red[:material/fiber_manual_record:] **{max(t.seconds - t.elapsed, 0):.1f} s left** "
                               f"· {dev.name} at {t.rate} Hz")
            try:
                st.session_state["server_rec"] = microphone.record(secs, dev.index, progress=show, devices=devices)
            except WorkbenchError as err:
                show_error(err)
            st.session_state.pop("mic_take", None)
            meter.empty()
            clock.empty()
    if rec := st.session_state.get("server_rec"):
        clips.append(("server microphone.wav", rec.wav_bytes()))
        st.audio(clips[-1][1])
        st.caption(f"{rec.elapsed:.1f} s from {rec.device} at {rec.rate} Hz"
                   + (" (stopped early)" if rec.stopped_early else "") + "; resampled to the model's "
                   f"{loaded.sample_rate} Hz when transcribed.")
with tab_samples:
    if DEMO_TESTSET.exists():
        items = load_manifest(DEMO_TESTSET)[:12]
        names = [p.name for p, _ in items]
        pick = st.pills("Held-out examples (not seen in training)", names, key="sample_pick")
        if pick:
            path, text = items[names.index(pick)]
            clips.append((path.name, path.read_bytes()))
            if st.session_state.get("sample_ref_for") != pick:  # prefill the reference once per pick
                st.session_state["reference"], st.session_state["sample_ref_for"] = text, pick
            st.caption(f"Reference: {text}")
    else:
        st.info(f"No shipped examples in this checkout ({DEMO_TESTSET.relative_to(DEMO_TESTSET.parents[2])} is "
                "missing). Upload or record instead.", icon=":material/info:")

c1, c2 = st.columns([2, 3])
specs = c1.multiselect("Backends (the first is the reference for differences)", available_backends(),
                       default=default_backends(loaded, 2), key="transcribe_backends")
reference = c2.text_input("Reference text (optional): WER/CER per backend", key="reference")
go = st.button("Transcribe", type="primary", icon=":material/play_arrow:", disabled=not (clips and specs))
if not clips:
    st.caption("Add audio above: upload, record, or pick a sample.")

if go:
    results, problems, notes = [], [], []
    with st.status("Transcribing …", expanded=False) as status:
        audios = []
        for name, data in clips:  # a bad clip is reported and skipped: the others still go through
            try:
                audios.append(load_audio(data, loaded.sample_rate, name=name))
            except WorkbenchError as err:
                problems.append(err)
        notes += [a.warning for a in audios if a.warning]
        for spec in specs if audios else []:
            status.update(label=f"Loading {spec} …")
            try:
                be = backend(loaded, spec)
            except Exception as err:  # noqa: BLE001 — shown below, the other backends go on
                problems.append(err)
                continue
            for a in audios:
                status.update(label=f"{spec}: {a.name}")
                try:
                    t = transcribe(a, be, loaded)
                except Exception as err:  # noqa: BLE001
                    problems.append(err)
                    continue
                row = {"audio": a.name, "backend": spec, "audio_s": round(a.duration, 2),
                       "latency_ms": t.latency_ms, "text": t.text}
                if reference.strip():
                    row.update({k: v for k, v in scores([reference], [t.text]).items() if k != "n"})
                results.append(row)
        status.update(label=f"Done: {len(results)} transcripts" + (f", {len(problems)} problems" if problems else ""),
                      state="complete" if results else "error")
    for note in notes:
        st.warning(note, icon=":material/warning:")
    for err in problems:  # outside the status box, where they are seen
        show_error(err)
    if results:  # a run that produced nothing leaves the earlier transcripts on the page
        st.session_state["transcripts"] = results
        st.session_state["transcript_audio"] = dict(clips)

results = st.session_state.get("transcripts") or []
if results:
    if loaded.random_weights:
        st.warning("Random-weight model: the transcripts are noise — compare latency and agreement only.",
                   icon=":material/casino:")
    audio_bytes = st.session_state.get("transcript_audio", {})
    for clip in dict.fromkeys(r["audio"] for r in results):
        rows = [r for r in results if r["audio"] == clip]
        with st.container(border=True):
            st.markdown(f"**{clip}** · {rows[0]['audio_s']} s")
            if clip in audio_bytes:
                st.audio(audio_bytes[clip])
            cols = st.columns(len(rows))
            for col, r in zip(cols, rows):
                with col:
                    st.markdown(f"`{r['backend']}`")
                    st.metric("latency", f"{r['latency_ms']:.0f} ms", label_visibility="collapsed")
                    if r is rows[0]:
                        body = html.escape(r["text"]) or "∅ (empty)"
                        st.markdown(f'<div class="transcript">{body}</div>', unsafe_allow_html=True)
                    else:
                        same = r["text"] == rows[0]["text"]
                        st.markdown(f'<div class="transcript">{charts.diff_html(rows[0]["text"], r["text"])}</div>'
                                    + ("" if not same else '<div style="color:#4d7c0f">✓ identical to the reference '
                                       'backend</div>'), unsafe_allow_html=True)
                    if "wer" in r:
                        st.caption(f"WER {r['wer']:.1%} · CER {r['cer']:.1%}")
    st.plotly_chart(charts.transcript_latency(results), width="stretch", key="latency_chart")
    st.dataframe(pd.DataFrame(results), hide_index=True, width="stretch",
                 column_config={"latency_ms": st.column_config.NumberColumn(format="%.1f")})
