"""Checkpoints in every form timm writes: half precision, mixed fused and unfused blocks."""

from __future__ import annotations

import copy

import pytest
import torch

from keras_repvgg.converters import convert_checkpoint

from helpers import assert_close_to_timm, make_timm_model, random_images, save_checkpoint, torch_logits


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_convert(dtype, tmp_path):
    model = make_timm_model("repvgg_a0", seed=3)
    half = copy.deepcopy(model).to(dtype)
    path = save_checkpoint(half, tmp_path / "half.safetensors")
    # The reference is timm's model with the same rounded weights, run in float32.
    reference = half.float().eval()
    x = random_images(2, 64, seed=2)
    ours = convert_checkpoint(path, input_size=64).model.predict(x, verbose=0)
    assert_close_to_timm(ours, torch_logits(reference, x))


def test_mixed_checkpoint_with_some_blocks_fused(tmp_path):
    model = make_timm_model("repvgg_b1g4", seed=5)
    x = random_images(2, 64, seed=6)
    expected = torch_logits(model, x)
    for block in (model.stem, model.stages[0][1], model.stages[2][7]):
        block.reparameterize()  # timm's own per-block fusion, a grouped block among them
    path = save_checkpoint(model, tmp_path / "mixed.safetensors")
    result = convert_checkpoint(path, input_size=64)
    assert result.fused_blocks == 3
    assert_close_to_timm(result.model.predict(x, verbose=0), expected)
