"""Profile: where a forward pass spends its time (PyTorch profiler) and what ONNX Runtime fuses."""
import plotly.express as px
import streamlit as st

from core import charts, profiling
from core.pipeline.onnx_specs import OnnxExport
from pages._shared import active_model, guarded, model_badge

st.title("Profile")
loaded = active_model()
model_badge(loaded)
st.caption("Same as `python -m core profile --onnx`.")

t1, t2 = st.tabs([":material/table_chart: PyTorch operators", ":material/account_tree: ONNX graph fusions"])
with t1:
    c = st.columns([1, 1, 1, 3])
    secs = c[0].number_input("Audio seconds", 0.5, 30.0, 2.0)
    top = c[1].number_input("Top N", 5, 100, 20)
    import torch
    device = c[2].selectbox("Device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    if st.button("Profile one forward pass", type="primary", icon=":material/play_arrow:"):
        with guarded(), st.spinner("Profiling …"):
            st.session_state["op_table"] = profiling.torch_op_table(loaded, secs, device, int(top))
    df = st.session_state.get("op_table")
    if df is not None:
        key = "self_cuda_ms" if "self_cuda_ms" in df else "self_cpu_ms"
        fig = px.bar(df.head(15)[::-1], x=key, y="operator", orientation="h", template="plotly_white",
                     color_discrete_sequence=charts.COLORWAY,
                     title="Self time by operator")
        st.plotly_chart(fig, width="stretch")
        st.dataframe(df, hide_index=True, width="stretch",
                     column_config={"self_pct": st.column_config.ProgressColumn("self %", format="%.1f",
                                                                                 min_value=0, max_value=100)})
with t2:
    art = OnnxExport(loaded).lookup()
    st.caption("Node counts per op type: the exported graph, then the graph ONNX Runtime runs at optimisation level "
               "basic and all (CPU). Op types that appear are fused kernels; those that vanish were fused away.")
    if art is None or not art.usable:
        st.info("The FP32 ONNX export is not built yet (or was rejected): build it on the Build page first.",
                icon=":material/construction:")
    elif st.button("Analyse the ONNX graph", type="primary", icon=":material/play_arrow:"):
        with guarded(), st.spinner("Optimising …"):
            st.session_state["op_hist"] = profiling.onnx_op_histogram(art.path)
    hist = st.session_state.get("op_hist")
    if hist is not None:
        s = profiling.fusion_summary(hist)
        c = st.columns(3)
        c[0].metric("Nodes exported", s["nodes_exported"])
        c[1].metric("After basic", s["nodes_basic"], s["nodes_basic"] - s["nodes_exported"], delta_color="inverse")
        c[2].metric("After all", s["nodes_all"], s["nodes_all"] - s["nodes_exported"], delta_color="inverse")
        st.markdown("**Fused in:** " + (" ".join(f":green-badge[{o}]" for o in s["new_ops"]) or "—"))
        st.markdown("**Fused away:** " + (" ".join(f":red-badge[{o}]" for o in s["gone_ops"]) or "—"))
        long = hist.melt(id_vars=["op_type"], value_vars=["exported", "basic", "all"], var_name="graph",
                         value_name="nodes")
        long = long[long["nodes"] > 0]
        fig = px.bar(long, x="op_type", y="nodes", color="graph", barmode="group", template="plotly_white",
                     color_discrete_sequence=charts.COLORWAY,
                     title="Operator histogram")
        st.plotly_chart(fig, width="stretch")
        st.dataframe(hist, hide_index=True, width="stretch")
