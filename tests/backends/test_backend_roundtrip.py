"""A .keras file written on each of the three backends loads on the other two with the same
outputs and description. Each backend needs a process of its own; this runs in the JAX pass,
which drives TensorFlow and torch in child processes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from roundtrip_child import main as run_side

from keras_repvgg.models.backend import BACKEND

from helpers import assert_close_to_timm

CHILD = Path(__file__).with_name("roundtrip_child.py")
BACKENDS = ("tensorflow", "jax", "torch")


def _child(backend: str, folder: Path, *args: str) -> None:
    env = {**os.environ, "KERAS_BACKEND": backend}
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run([sys.executable, str(CHILD), str(folder), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{backend}: {proc.stderr[-3000:]}"


@pytest.mark.skipif(BACKEND != "jax", reason="run once, from the JAX pass")
def test_keras_files_load_across_backends(a0_checkpoints, tmp_path):
    """The training form with in-graph preprocessing: BatchNorm, both convolutions, the
    identity branch, Rescaling and Normalization, and the Description layer all travel."""
    from keras_repvgg.core.configs import IMAGENET_MEAN, IMAGENET_STD

    from helpers import torch_logits

    pixels = np.random.default_rng(5).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    np.save(tmp_path / "input.npy", pixels)
    checkpoint = str(a0_checkpoints["train"])
    # Each backend writes its file; the last run on each reads all three. JAX is this process.
    run_side(tmp_path, checkpoint)
    _child("tensorflow", tmp_path, "--write", checkpoint)
    _child("torch", tmp_path, "--write", checkpoint)
    _child("tensorflow", tmp_path)
    run_side(tmp_path, None)

    normalized = ((pixels / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype(np.float32)
    expected = torch_logits(a0_checkpoints["model"], normalized)
    descriptions = set()
    for writer, reader in itertools.product(BACKENDS, BACKENDS):
        out = np.load(tmp_path / f"{writer}.on.{reader}.npy")
        assert_close_to_timm(out, expected)
        # The same file computes the same on every backend, to float32 rounding.
        assert_close_to_timm(out, np.load(tmp_path / f"{writer}.on.{writer}.npy"), rel=1e-6)
        descriptions.add((tmp_path / f"{writer}.on.{reader}.json").read_text())
    assert len(descriptions) == 1
    description = json.loads(descriptions.pop())
    assert description["form"] == "train" and description["include_preprocessing"] is True
