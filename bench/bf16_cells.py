"""The bf16 gate's conformance cells, cell by cell (CPU, demo model): the BF16 variant through its FP32 emulation
(what the gate runs: ONNX Runtime's CPU EP has no BF16 kernels) beside PyTorch's own bf16, both against PyTorch
FP32 with the matrix's bf16 limits. The gate itself records only how many cells pass.

    PYTHONPATH=. python bench/bf16_cells.py [--model demo]
"""
from __future__ import annotations

import argparse

from core.backends import make_backend
from core.check import cell_logits, cells, check_backend, speech_source
from core.models import load_model
from core.pipeline.onnx_build import build_variant
from core.pipeline.verify import GATE_BATCHES, reference
from core.variants import _open_bf16_emulation


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="demo")
    loaded = load_model(p.parse_args().model)
    art = build_variant(loaded, "bf16", log=lambda *_: None)   # the pipeline's artifact, built or cached
    print(f"# {art.dir.name}: {art.status} {art.meta['reasons']}")
    matrix = cells(loaded, speech_source(loaded), batches=GATE_BATCHES)
    with reference(loaded) as ref:
        refs = {cell.label: cell_logits(ref, loaded, cell.items) for cell in matrix}
    emulation = _open_bf16_emulation(art.path, lambda *_: None)
    with make_backend("torch:bf16:cpu", loaded) as torch_bf16:
        for backend, what in ((emulation, "bf16 ONNX, emulated on ORT CPU"), (torch_bf16, "PyTorch bf16")):
            rows = check_backend(backend, loaded, matrix, refs)
            print(f"\n{what}: {sum(r['passed'] for r in rows)}/{len(rows)} cells pass")
            for r in rows:
                print(f"  {r['cell']:45s} rel |dlogit| {r['rel_dlogit']:.4f}  frames {r['frame_agree']:.4f}  "
                      f"CER {r['transcript_cer']:.4f}  {'pass' if r['passed'] else 'FAIL ' + r['reason']}")
    emulation.close()


if __name__ == "__main__":
    main()
