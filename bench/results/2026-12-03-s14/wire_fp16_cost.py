"""Would FP16 audio on the wire shorten a Triton request? The client's serialisation of one 5 s request
(tritonclient.grpc InferInput + the request protobuf) as FP32 and as FP16, against the client's cast to FP16."""
import time

import numpy as np
import tritonclient.grpc as g
from tritonclient.grpc import _utils


def p50_ms(fn, n=300):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.percentile(ts, 50)) * 1e3


def serialise(x, dtype):
    i = g.InferInput("input_values", list(x.shape), dtype)
    i.set_data_from_numpy(x)
    return _utils._get_inference_request(model_name="asr", inputs=[i], model_version="", request_id="", outputs=None,
                                         sequence_id=0, sequence_start=False, sequence_end=False, priority=0,
                                         timeout=None, parameters=None).SerializeToString()


x32 = np.random.default_rng(0).standard_normal((1, 80000)).astype(np.float32)
x16 = x32.astype(np.float16)
for name, x, dt in (("FP32", x32, "FP32"), ("FP16", x16, "FP16")):
    print(f"serialise {name}: p50 {p50_ms(lambda: serialise(x, dt)):.3f} ms, {len(serialise(x, dt))} bytes")
print(f"cast FP32 -> FP16 on the client: p50 {p50_ms(lambda: x32.astype(np.float16)):.3f} ms")
