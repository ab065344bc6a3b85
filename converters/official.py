"""The official RepVGG checkpoints (DingXiaoH/RepVGG): PyTorch pickles, renamed to timm's keys.

They are read only with `torch.load(..., weights_only=True)`, which refuses any
object that is not a tensor or a plain container, so loading one never runs
code from the file. torch is an optional extra: `pip install keras-repvgg[torch]`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_repvgg.core.layout import official_key, timm_key

from .errors import CheckpointError
from .readers import ArrayReader


def _load_pickle(path: Path) -> dict:
    try:
        import torch
    except ImportError as err:
        raise CheckpointError(
            f"{path}: reading PyTorch checkpoints needs torch: pip install 'keras-repvgg[torch]'"
        ) from err
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused: not a plain PyTorch state dict that loads with "
            f"weights_only=True ({first_line})"
        ) from err
    # Training scripts wrap the weights ({"state_dict": ...}, {"model": ...}).
    while isinstance(state, dict) and len(state) == 1 and next(iter(state)) in ("state_dict", "model"):
        state = next(iter(state.values()))
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: key {key!r} holds a {type(value).__name__}, not a tensor"
            )
    return state


def _to_numpy(tensor) -> np.ndarray:
    import torch

    if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # float16 and bfloat16; numpy has no bfloat16
    return tensor.detach().cpu().numpy()


def read_official(path: Path) -> ArrayReader:
    """An official (or timm-named) PyTorch state dict, with keys in timm's names."""
    state = _load_pickle(path)
    arrays, display = {}, {}
    for key, tensor in state.items():
        original = key[len("module."):] if key.startswith("module.") else key  # DataParallel
        name = timm_key(original)  # the renaming is `layout`'s: stage0 is timm's stem, ...
        arrays[name], display[name] = _to_numpy(tensor), key
    return ArrayReader(path, arrays, lambda k: display.get(k, official_key(k)))
