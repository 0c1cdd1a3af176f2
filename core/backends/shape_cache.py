"""What the fast backend compiles ahead for one bucket shape, kept under artifacts/compile-cache without the
weights, in one of two forms.

AOTInductor packages (compile="aoti", compile-cache/aoti; CPU only: loading one segfaulted on CUDA with torch 2.11,
bench/NOTES.md 2026-12-02): a package holds only the compiled graph (3 MB for wav2vec2-large), and at load the
runner takes the live module's own parameters (load_constants, user-managed, no copy). Loading one took 0.01 s where
a warm torch.compile of the same shape took ~3 s and a package with the weights inside 7 s (CPU, bench/NOTES.md
2026-11-30).

Precompiled functions (compile="precompile", compile-cache/precompiled): torch.compile's own ahead-of-time form
(`aot_compile`, saved with `save_compiled_function`): Dynamo's guards and Inductor's output for run_module, which
takes the module as an argument, so its weights are graph inputs and are not saved (2.9 MB for wav2vec2-large). A
load skips Dynamo's tracing: on the CPU a shape loaded in 0.46 s where a warm-cache torch.compile took 2.0 s
(bench/NOTES.md 2026-12-02).

Either artifact depends on the module's code and architecture, the dtype, the device kind, the shape and the torch
version, never on the weight values: all of that is in its key, so models of one architecture share artifacts."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

SOURCE = Path(__file__).with_name("fast_module.py")   # the module's code: a change there builds anew


def shape_key(config: dict, options: dict, dtype, device, example_args, kwargs: dict,
              dynamic_batch: bool = False) -> str:
    """dynamic_batch: the inputs' first dimension is marked dynamic, so one artifact serves every batch size its
    guards admit (2 and up: torch specializes size 1) and the batch size is left out of the key."""
    import torch
    shapes = [([None] if dynamic_batch else list(a.shape[:1])) + list(a.shape[1:]) + [str(a.dtype)]
              for a in example_args]
    capability = list(torch.cuda.get_device_capability(device)) if torch.device(device).type == "cuda" else None
    blob = json.dumps({"config": config, "options": options, "dtype": str(dtype), "device": torch.device(device).type,
                       "capability": capability, "inputs": shapes, "kwargs": kwargs, "torch": torch.__version__,
                       "code": hashlib.sha256(SOURCE.read_bytes()).hexdigest()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def aoti_runner(module, example_args: tuple, kwargs: dict, key: str, root: Path, stats: dict,
                dynamic_batch: bool = False):
    """The callable for this one shape: the package at root/<key>.pt2, exported and compiled first if missing
    (written atomically), loaded with `module`'s parameters and buffers as its constants."""
    import os
    import torch
    if dynamic_batch:
        raise NotImplementedError("AOTInductor packages are built for static shapes here")
    path = root / f"{key}.pt2"
    if not path.exists():
        exported = torch.export.export(module, example_args, kwargs)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{key}.{os.getpid()}.pt2"   # renamed when complete: a killed build leaves no package
        try:
            torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp), inductor_configs={
                "aot_inductor.package_constants_in_so": False})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        stats["aoti_built"] = stats.get("aoti_built", 0) + 1
    else:
        stats["aoti_loaded"] = stats.get("aoti_loaded", 0) + 1
    runner = torch._inductor.aoti_load_package(str(path))
    state = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    runner.load_constants({name: state[name] for name in runner.get_constant_fqns()}, check_full_update=True,
                          user_managed=True)
    return runner


def precompile_supported() -> bool:
    """Whether this torch has torch.compile's aot_compile (torch 2.13 has; torch 2.11, on the GPU machine on
    2026-12-02, has not: the build failed with AttributeError)."""
    import torch
    return hasattr(torch.compile(run_module), "aot_compile")


def run_module(module, x, lengths, full: bool):
    """What compile="precompile" compiles: the module is an argument, so its parameters are inputs, not constants."""
    return module(x, lengths, full=full)


def precompiled_runner(module, example_args: tuple, kwargs: dict, key: str, root: Path, stats: dict,
                       dynamic_batch: bool = False):
    """The callable for this one shape: root/<key>.bin, compiled with torch.compile's aot_compile first if missing
    (written atomically by save_compiled_function), called with `module` as its first argument. dynamic_batch:
    compiled with the inputs' first dimension symbolic, so it serves every batch size from 2 up."""
    import functools
    import torch
    path = root / f"{key}.bin"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        if dynamic_batch:   # marked copies: the function's guards would refuse the caller's tensors if they were
            example_args = tuple(a.clone() for a in example_args)   # marked (torch 2.13), so those stay unmarked
            for a in example_args:
                torch._dynamo.mark_dynamic(a, 0)
        compiled = torch.compile(run_module, dynamic=False, fullgraph=True).aot_compile(
            ((module, *example_args), kwargs))
        compiled.save_compiled_function(str(path))
        stats["precompiled_built"] = stats.get("precompiled_built", 0) + 1
    else:
        stats["precompiled_loaded"] = stats.get("precompiled_loaded", 0) + 1
    with open(path, "rb") as f:
        fn = torch.compiler.load_compiled_function(f)
    return functools.partial(fn, module)


# compile mode -> (its runner, its folder under artifacts/compile-cache)
FORMS = {"aoti": (aoti_runner, "aoti"), "precompile": (precompiled_runner, "precompiled")}
