"""timm checkpoint -> Keras: wall time and peak memory per variant and checkpoint form."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import run_child


def _checkpoints(arch: str, folder: Path) -> dict[str, Path]:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(arch).eval()
    fused = timm.utils.reparameterize_model(copy.deepcopy(model))
    paths = {}
    for form, m in (("train", model), ("fused", fused)):
        paths[form] = folder / f"{arch}_{form}.safetensors"
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(paths[form]))
    # The official repository's naming, as a PyTorch pickle (read with torch).
    from keras_repvgg.core.layout import official_key

    paths["official train .pth"] = folder / f"{arch}_official.pth"
    torch.save({official_key(k): v for k, v in model.state_dict().items()}, paths["official train .pth"])
    return paths


def run(variants: list[str]) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in variants:
            for form, path in _checkpoints(arch, Path(tmp)).items():
                child = run_child("benchmarks.convert_child", str(path))
                size = path.stat().st_size
                extra = child["peak_rss"] - child["baseline_rss"]
                rows.append({
                    "variant": arch,
                    "form": form,
                    "checkpoint_mb": round(size / 2**20, 1),
                    "seconds": round(child["seconds"], 2),
                    "peak_extra_mb": round(extra / 2**20, 1),
                    "peak_over_checkpoint": round(extra / size, 2),
                })
                path.unlink()
    return rows
