"""Models: choose what every other page works on."""
import streamlit as st

from core.errors import ModelNotFoundError
from core.models import ARCHITECTURES, REFERENCE_MODEL
from pages._shared import active_model, guarded, load, model_badge

st.title("Models")
st.caption("Everything the workbench builds and measures is for the model chosen here.")

KINDS = {"Demo model (offline)": "demo", "Hugging Face id": "hub", "Local folder": "local",
         "Architecture, random weights": "random"}
kind = st.segmented_control("Source", list(KINDS), default="Demo model (offline)", key="model_kind")
source = None
if KINDS.get(kind) == "demo":
    st.caption("demo-hindi-synth: a small CTC model trained offline on synthesised Hindi speech — "
               "it runs everywhere with no download, but it is not a general Hindi recogniser.")
    source = "demo"
elif KINDS.get(kind) == "hub":
    source = st.text_input("Model id", value=REFERENCE_MODEL, help="Any Wav2Vec2-style CTC model with a processor. "
                           "Taken from the local Hugging Face cache first; downloaded when the Hub is reachable.")
elif KINDS.get(kind) == "local":
    source = st.text_input("Folder", placeholder="/path/to/model (written by save_pretrained)")
elif KINDS.get(kind) == "random":
    arch = st.radio("Architecture", list(ARCHITECTURES), horizontal=True,
                    help="wav2vec2-large has indicwav2vec-hindi's shape (315 M parameters): real speed, "
                         "meaningless transcripts.")
    source = f"random:{arch}"

if st.button("Use this model", type="primary", disabled=not source, icon=":material/check:"):
    with guarded(), st.spinner(f"Loading {source} …"):
        try:
            load(source)
        except ModelNotFoundError as err:
            if KINDS.get(kind) != "local":
                raise
            # one answer whether the path is missing, not a folder or not a model: the page must not tell a
            # visitor which server paths exist
            raise ModelNotFoundError(f"No saved Hugging Face model at {source}.",
                                     "Give a folder on the dashboard's machine written by save_pretrained() "
                                     "(config.json, weights, processor files).") from err
        st.session_state["model_source"] = st.session_state["model_switched"] = source
    if st.session_state.get("model_switched") == source:
        st.rerun()  # the sidebar, drawn before this page, must show the new model at once
if switched := st.session_state.pop("model_switched", None):
    st.toast(f"Active model: {switched}", icon=":material/check:")

st.divider()
loaded = active_model()
st.subheader("Active model")
model_badge(loaded)
info = loaded.describe()
c = st.columns(5)
c[0].metric("Parameters", f"{info['parameters'] / 1e6:.1f} M")
size = info["size_mb_fp32"]
c[1].metric("Size (FP32)", f"{size:,.0f} MB" if size >= 10 else f"{size:.1f} MB")
c[2].metric("Layers × hidden", f"{info['layers']} × {info['hidden']}")
c[3].metric("Vocabulary", info["vocab_size"])
c[4].metric("Sample rate", f"{info['sample_rate'] // 1000} kHz")
if loaded.notice:
    st.info(loaded.notice, icon=":material/info:")
st.dataframe([{"property": k, "value": str(v)} for k, v in info.items()], hide_index=True, width="stretch")
