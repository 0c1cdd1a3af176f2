"""A Triton Python-backend model running a workbench backend; core.triton.pybackend copies it into a model
repository as <model>/1/model.py. Triton starts every instance of its instance_group as its own stub process (own
interpreter, own GIL, own GPU), which PyTriton's in-process callables cannot do: on two H200s, four PyTriton
instances in one process gave 0.84x the throughput of two on one GPU (bench/NOTES.md).

Parameters (config.pbtxt): model, backend, warmup_seconds, backend_options (JSON: the backend's keyword options).
The stub imports the workbench through PYTHONPATH, which the launcher sets to its own sys.path."""
from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend, inside the stub only

INPUTS = ("input_values", "attention_mask")


def cpu_share(config: dict) -> int:
    """This machine's cores divided among the instances of the model (count on each listed GPU, or count)."""
    import os
    instances = sum(int(g.get("count", 1)) * max(1, len(g.get("gpus") or [])) for g in config.get("instance_group", []))
    return max(1, (os.cpu_count() or 1) // max(1, instances))


class TritonPythonModel:
    def initialize(self, args):
        from core.backends import make_backend
        from core.models import load_model
        from core.triton.serve import make_infer, warm_up
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        import torch
        # every instance process would start a CPU thread pool as large as the machine: share the cores instead
        # (two H200s, four instance processes took 35 ms of server time a batch, two took 17 ms: oversubscription
        # is the suspect; bench/NOTES.md). A GPU instance computes nothing on its CPU pool, whose idle threads
        # spun: two fast:fp16 instances on one H200 took 10.8 cores between them (2026-12-02): one thread each.
        gpu = args["model_instance_kind"] == "GPU"
        torch.set_num_threads(1 if gpu else cpu_share(config))
        if gpu:   # this process serves one GPU: "cuda" below means that one
            torch.cuda.set_device(int(args["model_instance_device_id"]))
        loaded = load_model(params.get("model") or None)
        self.backend = make_backend(params["backend"], loaded, **json.loads(params.get("backend_options") or "{}")).load()
        seconds = float(params.get("warmup_seconds") or 0)
        if seconds:
            sizes = warm_up(self.backend, loaded, seconds, int(config["max_batch_size"]))
            held = f", GPU memory reserved {torch.cuda.memory_reserved() / 2**30:.2f} GiB" if gpu else ""
            print(f"WARMED batch sizes {sizes} at {seconds:g} s ({args['model_instance_name']}){held}", flush=True)
        from core.triton.stages import StageTimes
        self.stages = StageTimes(f"{args['model_instance_name']} ({args['model_instance_kind']} "
                                 f"{args['model_instance_device_id']})")
        self.infer = make_infer(self.backend, loaded, self.stages)

    def execute(self, requests):
        with self.stages("inputs"):
            feeds = []
            for request in requests:
                tensors = {name: pb_utils.get_input_tensor_by_name(request, name) for name in INPUTS}
                feeds.append({name: t.as_numpy() for name, t in tensors.items() if t is not None})
        outputs = self.infer(feeds)
        with self.stages("responses"):
            responses = []
            for out in outputs:   # a request the model cannot take gets its own error, not its batch's
                if isinstance(out, Exception):
                    responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(out))))
                else:
                    responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("logits", out["logits"])]))
        return responses

    def finalize(self):
        self.stages.flush()   # the last interval's summary, into the server's log
        self.backend.close()
