"""Host-side stage times of one served batch (core.triton.serve.make_infer): 16 requests of 5 s, tiny model,
torch:fp32:cpu, 20 batches after 3 unrecorded; p50 ms per stage.  python bench/served_batch_stages.py"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.models import load_model
from core.backends import make_backend
from core.triton.serve import make_infer
from core.triton.stages import StageTimes
tiny = load_model("random:wav2vec2-tiny")
x = (0.1*np.random.default_rng(0).standard_normal((1, 80000))).astype(np.float32)
reqs = [{"input_values": x} for _ in range(16)]
with make_backend("torch:fp32:cpu", tiny) as b:
    st = StageTimes("bench", every_s=1e9)
    infer = make_infer(b, tiny, st)
    for _ in range(3): infer(reqs)
    st.ms = {}
    for _ in range(20): infer(reqs)
    print({k: round(float(np.percentile(v, 50)), 2) for k, v in st.ms.items()})
