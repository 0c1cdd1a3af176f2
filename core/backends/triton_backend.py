"""Triton client backend: the model behind a Triton server (the local PyTriton one or any remote cluster),
measured exactly like an in-process backend. Spec `triton:<precision>:<http|grpc>`; the precision is a
label for what the server runs; requests carry the audio as the server's metadata declares it (FP32, or FP16 where the
served backend computes in FP16). Options: url, model_name, timeout_s."""
from __future__ import annotations

import os
import re
import threading

import numpy as np

from ..errors import BackendUnavailableError, WorkbenchError
from .base import Backend

SPECS = ["triton:fp32:http", "triton:fp32:grpc"]
PROTOCOLS = ("http", "grpc")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
START_HINT = ("Start the local server with `python -m core serve --model <model> --backend ort:fp32:cpu`, "
              "or give the server's address with --triton-url host:port (sweep: --url host:port; or set "
              "WORKBENCH_TRITON_URL).")


class TritonRequestError(WorkbenchError):
    """The server answered an inference request with an error (bad shape, model failure, timeout...)."""


def available(spec) -> tuple[bool, str]:
    if spec.device not in PROTOCOLS:
        return False, f"unknown Triton protocol '{spec.device}' (use http or grpc)"
    try:
        __import__(f"tritonclient.{spec.device}")
    except ImportError:
        return False, f"tritonclient[{spec.device}] is not installed: pip install 'tritonclient[{spec.device}]'"
    return True, ""


def make(spec, loaded=None, **options):
    return TritonBackend(spec, **options)


def default_url(protocol: str) -> str:
    """WORKBENCH_TRITON_URL, else the local server started by `python -m core serve`, else localhost."""
    if os.environ.get("WORKBENCH_TRITON_URL"):
        return os.environ["WORKBENCH_TRITON_URL"]
    try:
        from ..triton.server import read_state
        info = read_state()
        if info:
            return info.url(protocol)
    except ImportError:
        pass
    return f"localhost:{DEFAULT_PORTS[protocol]}"


def server_message(err: Exception) -> str:
    """The useful part of a Triton error: PyTriton forwards whole Python tracebacks, keep their last line."""
    text = err.message() if hasattr(err, "message") and callable(err.message) else str(err)
    text = (text or str(err)).strip()
    if "API is restricted" in text:  # PyTriton guards some endpoints with an access token the client lacks
        return "the server refuses this request: it is a restricted Triton API (an access token is required)"
    if "Traceback (most recent call last)" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*: ", line)]
        text = (raised or lines)[-1]
    return text


def half(values: np.ndarray) -> np.ndarray:
    """float32 -> float16 with numpy's rounding (to nearest, ties to even), through torch: numpy 1.26 has no SIMD path
    for float16 casts (bench/NOTES.md, eighteenth session)."""
    import torch
    return torch.from_numpy(values).to(torch.float16).numpy()


class TritonBackend(Backend):
    runtime = "triton"

    def __init__(self, spec, url: str | None = None, model_name: str = "asr", model_version: str = "",
                 timeout_s: float = 30.0):
        super().__init__(spec)
        self.url = url or default_url(spec.device)
        self.model_name = model_name
        self.model_version = model_version
        self.timeout_s = float(timeout_s)
        self._local = threading.local()  # tritonclient.http (gevent) clients must stay in their own thread
        self._clients: list = []
        self._lock = threading.Lock()
        self._loaded = False
        self.optional_inputs: set[str] = set()
        self.audio_dtype = "FP32"

    @property
    def name(self) -> str:
        return f"{self.spec} ({self.model_name}@{self.url})"

    def _module(self):
        import tritonclient.grpc as grpc
        import tritonclient.http as http
        return http if self.device == "http" else grpc

    @property
    def client(self):
        """This thread's client (created on first use), or None before load()."""
        if not self._loaded:
            return None
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._new_client()
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _new_client(self):
        mod = self._module()
        if self.device == "http":
            return mod.InferenceServerClient(self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
        return mod.InferenceServerClient(self.url)

    def load(self):
        from tritonclient.utils import InferenceServerException
        self._loaded = True
        try:
            live = self.client.is_server_live(**self._timeout_kw())
        except (InferenceServerException, OSError, ValueError) as err:
            live, why = False, server_message(err)
        else:
            why = "not live"
        if not live:
            self.close()
            raise BackendUnavailableError(f"Triton server at {self.url} ({self.device}) is not reachable: {why}.",
                                          START_HINT)
        try:
            ready = self.client.is_model_ready(self.model_name, self.model_version, **self._timeout_kw())
        except InferenceServerException:
            ready = False
        if not ready:
            names = self._model_names()
            self.close()
            raise BackendUnavailableError(
                f"Model '{self.model_name}' is not ready on the Triton server at {self.url}.",
                f"Models it reports: {', '.join(names) if names else 'none visible'}; pass model_name=... "
                "or wait until it has loaded (server log).")
        meta = self.client.get_model_metadata(self.model_name, self.model_version, **self._meta_kw())
        inputs = meta["inputs"] if isinstance(meta, dict) else meta.get("inputs", [])
        self.input_names = [i["name"] for i in inputs]
        # the audio goes as the server declares it: FP16 halves every copy of it (core.triton.repo.audio_dtype);
        # a type this client does not send gets FP32 and the server's own refusal
        declared = next((i.get("datatype") for i in inputs if i["name"] == "input_values"), "FP32")
        self.audio_dtype = declared if declared in ("FP16", "FP32") else "FP32"
        config = self._config()
        self.max_batch = int(config.get("max_batch_size", 0) or 0)   # 0: the server takes any batch, or did not say
        self.optional_inputs = {i["name"] for i in config.get("input", []) if i.get("optional")}
        return self

    def _config(self) -> dict:
        try:
            config = self.client.get_model_config(self.model_name, self.model_version, **self._meta_kw())
        except Exception:  # noqa: BLE001 - an older server without the endpoint: send batches whole, all inputs
            return {}
        return config.get("config", config) if isinstance(config, dict) else {}

    def server_pids(self) -> list[int]:
        try:
            from ..triton.server import read_state
        except ImportError:
            return []
        info = read_state()
        return [info.pid] if info and info.url(self.device) == self.url else []

    def _timeout_kw(self) -> dict:
        return {"client_timeout": self.timeout_s} if self.device == "grpc" else {}

    def _meta_kw(self) -> dict:
        return {"as_json": True, **self._timeout_kw()} if self.device == "grpc" else {}

    def _model_names(self) -> list[str]:
        try:  # a restricted endpoint on PyTriton servers: best effort only
            index = self.client.get_model_repository_index(**self._meta_kw())
            models = index if isinstance(index, list) else index.get("models", [])
            return [m.get("name", "?") for m in models]
        except Exception:
            return []

    def prepare(self, input_values, attention_mask=None):
        """Requests of at most the server's max batch (a larger batch is split, as a client of that server must)."""
        if self.client is None:
            raise BackendUnavailableError("The Triton backend is not loaded.", "Call load() (or use `with`).")
        values = np.ascontiguousarray(input_values, dtype=np.float32)
        if self.audio_dtype == "FP16":
            values = half(values)
        mask = None
        if "attention_mask" in self.input_names:
            mask = None if attention_mask is None else np.ascontiguousarray(attention_mask, dtype=np.int64)
            # A mask of ones is what a server with an optional mask fills in itself; leaving it out halves a
            # request's bytes (int64 per sample against float32) and the client's serialisation work.
            if "attention_mask" in self.optional_inputs:
                mask = None if mask is None or mask.all() else mask
            elif mask is None:
                mask = np.ones(values.shape, np.int64)
        step = self.max_batch or len(values)
        return [self._inputs(values[i:i + step], None if mask is None else mask[i:i + step])
                for i in range(0, len(values), step)]

    def _inputs(self, values, mask):
        mod = self._module()
        feeds = [("input_values", values, self.audio_dtype)]
        feeds += [] if mask is None else [("attention_mask", mask, "INT64")]
        inputs = []
        for name, array, dtype in feeds:
            item = mod.InferInput(name, list(array.shape), dtype)
            item.set_data_from_numpy(array)
            inputs.append(item)
        return inputs

    def run(self, prepared):
        from tritonclient.utils import InferenceServerException
        outputs = [self._module().InferRequestedOutput("logits")]
        results = []
        for inputs in prepared:
            try:
                results.append(self.client.infer(self.model_name, inputs, model_version=self.model_version,
                                                 outputs=outputs, **self._timeout_kw()))
            except InferenceServerException as err:
                raise self._request_error(err) from err
            except Exception as err:  # transport failures (refused, reset, timed out) surface as many types
                raise self._request_error(err) from err
        return results

    def to_host(self, out):
        return np.concatenate([r.as_numpy("logits") for r in out]).astype(np.float32, copy=False)

    def _request_error(self, err: Exception) -> WorkbenchError:
        text = server_message(err)
        low = text.lower()
        if "deadline" in low or "timed out" in low or "timeout" in low:
            return TritonRequestError(f"Triton request to {self.url} timed out after {self.timeout_s:g} s: {text}",
                                      "The server is overloaded or stuck: raise the timeout, lower the concurrency, "
                                      "or check the server log.")
        if any(s in low for s in ("connection refused", "failed to connect", "unavailable", "connection reset",
                                  "broken pipe", "remote end closed", "connection aborted")):
            return BackendUnavailableError(f"Triton server at {self.url} is not reachable: {text}", START_HINT)
        return TritonRequestError(f"Triton server at {self.url} rejected the request: {text}",
                                  f"Inputs are input_values {self.audio_dtype} [batch, samples] "
                                  "(processor-normalised audio)"
                                  + (" and attention_mask INT64 [batch, samples]" if "attention_mask" in
                                     getattr(self, "input_names", []) else "") + ".")

    def close(self):
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:
                pass
        self._local = threading.local()
        self._loaded = False
        self.optional_inputs = set()
