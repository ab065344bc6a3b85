"""`save_preset`: a checkpoint or a model as a KerasHub preset folder, its fidelity to timm measured.

The preset itself is written by `exports.preset.write_preset`; here the source is converted
and, where the checkpoint is one timm loads (safetensors) and timm is installed, timm's
logits are computed in a process of its own (`timm_logits`) and compared with ours, so that
the model card states a measured number rather than a promise.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from keras_repvgg.exports.preset import Fidelity, check_target, write_preset

FIDELITY_INPUTS = 2  # random normalized images at the model's size
TIMM_TIMEOUT_S = 600


def measure_fidelity(model, weights: Path) -> "tuple[Optional[Fidelity], str]":
    """(timm's closeness to `model` on random inputs, None and why not where it cannot be measured)."""
    from keras_repvgg.models.model import describe

    if importlib.util.find_spec("timm") is None or importlib.util.find_spec("torch") is None:
        return None, "not measured here (timm and torch were not installed where the preset was written)"
    if weights.suffix != ".safetensors":
        return None, f"not measured here ({weights.name} is not a checkpoint timm loads; an official .pth)"
    description = describe(model)
    x = np.random.default_rng(0).standard_normal((FIDELITY_INPUTS, *model.input_shape[1:])).astype(np.float32)
    ours = np.asarray(model(x, training=False))
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        command = [sys.executable, "-m", "keras_repvgg.front.timm_logits", description.variant, str(weights),
                   str(description.classes), str(Path(tmp) / "x.npy"), str(Path(tmp) / "timm.npy")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMM_TIMEOUT_S,
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return None, f"not measured here (timm could not run the checkpoint: {last[:200]})"
        reference = np.load(Path(tmp) / "timm.npy")
    max_abs = float(np.abs(ours - reference).max())
    # timm's version from its metadata: importing timm here (torch after TensorFlow) can crash.
    timm_version = importlib.metadata.version("timm")
    return Fidelity(max_abs, max_abs / float(np.abs(reference).max()), FIDELITY_INPUTS, timm_version), ""


def save_preset(source: Any, directory: "str | os.PathLike[str]", arch: Optional[str] = None,
                measure: bool = True, **convert_options: Any) -> Path:
    """Write a KerasHub preset folder (configs, weights, model card) at `directory`.

    source: a checkpoint (file, folder, hub id; converted with `arch` and `convert_options`,
        `convert_checkpoint`'s keywords), a model of ours, or a RepVGG KerasHub model.
    measure: compare with timm's logits and put the number in the model card (a checkpoint
        timm loads, with timm and torch installed).
    `keras_hub.models.ImageClassifier.from_preset(directory)` loads it in any process that has
    imported keras_repvgg.
    """
    fidelity, why = None, "not measured (the preset was written from a model, not from its checkpoint)"
    if isinstance(source, (str, os.PathLike)):
        from keras_repvgg.converters import convert_checkpoint

        check_target(directory)  # before the conversion, which may take a while
        converted = convert_checkpoint(source, arch, **convert_options)
        model = converted.model
        if measure:
            fidelity, why = measure_fidelity(model, converted.checkpoint.weights_path)
        else:
            why = "not measured (measure=False)"
    else:
        model = source.to_keras_model() if hasattr(source, "to_keras_model") else source
    return write_preset(model, directory, fidelity, why)
