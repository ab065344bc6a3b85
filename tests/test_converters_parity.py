"""Converted models against timm's own PyTorch models, for every variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keras_repvgg import get_variant, reparameterize
from keras_repvgg.converters import convert_checkpoint
from keras_repvgg.core.parameters import deploy_parameter_count

from helpers import (
    G2_VARIANTS,
    KERAS3_ONLY,
    TIMM_VARIANTS,
    assert_close_to_timm,
    checkpoint_size,
    keras_logits,
    random_images,
    timm_checkpoint,
    timm_fused_forms,
    timm_reference,
    torch_logits,
    variant_seed,
)


def _check_variant(arch: str, size: int, folder: Path) -> None:
    """Every route from a timm model to Keras lands on timm's logits.

    Safetensors in both forms and the official deploy .pth into the deploy form;
    the official training .pth into our training form, whose own
    reparameterization must then equal the converter's deploy form.
    """
    seed = variant_seed(arch)
    x = random_images(2, size, seed=1)
    expected = timm_reference(arch, seed, x)
    # The fused and official forms of the same model, and timm's fused logits, from one fusion by timm.
    derived = timm_fused_forms(arch, seed, x, folder)
    # timm's own fusion agrees with its training form: the reference itself is sound.
    assert_close_to_timm(derived["fused_logits"], expected)
    checkpoints = {"train": timm_checkpoint(arch, seed), "fused": derived["fused"],
                   "official deploy": derived["official-deploy"]}
    timm_fused_params = checkpoint_size(checkpoints["fused"])  # a fused model holds parameters only
    official_train = derived["official-train"]
    for form, path in checkpoints.items():
        # No arch and no config.json: the variant is inferred from the shapes.
        result = convert_checkpoint(path, input_size=size)
        assert result.variant.name == arch, form
        assert result.fused_blocks == (0 if form == "train" else result.total_blocks)
        if form == "train":
            assert result.model.count_params() == timm_fused_params == deploy_parameter_count(
                get_variant(arch)
            )
            deploy_logits = keras_logits(result.model, x)
        assert_close_to_timm(keras_logits(result.model, x), expected)
        del result

    # The official training-form file, one to one into our training form.
    train_form = convert_checkpoint(official_train, form="train", input_size=size).model
    assert_close_to_timm(keras_logits(train_form, x), expected)
    fused = reparameterize(train_form)
    assert not any(".conv_kxk" in layer.name for layer in fused.layers)
    # Our reparameterization equals our converter's fusion to float32 precision.
    assert_close_to_timm(keras_logits(fused, x), deploy_logits, rel=1e-5)


# The variants are data (`VARIANTS`): they differ in depths, widths, groups and SE, not in
# code. Under Keras 3 every variant runs; under tf-keras one of each kind of block (plain A
# and B stages, grouped, squeeze-excitation, and a g2 file from the official release) checks
# what that Keras builds, and the others, which would only repeat those layers, are skipped.
ONE_OF_EACH_KIND = ("repvgg_a0", "repvgg_b0", "repvgg_b1g4", "repvgg_d2se", "repvgg_b1g2")


def _variants(archs):
    return [a if a in ONE_OF_EACH_KIND else pytest.param(a, marks=KERAS3_ONLY) for a in archs]


@pytest.mark.parametrize("arch", _variants(TIMM_VARIANTS))
def test_timm_variant_matches_at_small_size(arch, tmp_path):
    _check_variant(arch, 64 if arch != "repvgg_d2se" else 96, tmp_path)


@pytest.mark.parametrize("arch", _variants(G2_VARIANTS))
def test_g2_variant_built_by_timm_matches(arch, tmp_path):
    _check_variant(arch, 64, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["repvgg_a0", "repvgg_b1g4", "repvgg_d2se"])
def test_variant_matches_at_full_size(arch, tmp_path):
    _check_variant(arch, get_variant(arch).preprocessing.input_size, tmp_path)


def test_features_match_timm_intermediates(a0_checkpoints):
    import torch

    x = a0_checkpoints["x"]
    with torch.no_grad():
        reference = a0_checkpoints["model"].forward_intermediates(
            torch.from_numpy(x.transpose(0, 3, 1, 2)), intermediates_only=True
        )
    model = convert_checkpoint(a0_checkpoints["train"], features_only=True, input_size=64).model
    ours = model.predict(x, verbose=0)
    assert len(ours) == len(reference) == 5
    for feature, ref in zip(ours, reference, strict=True):
        assert_close_to_timm(feature, ref.numpy().transpose(0, 2, 3, 1))


def test_include_preprocessing_takes_rgb(a0_checkpoints):
    from keras_repvgg.core.configs import IMAGENET_MEAN, IMAGENET_STD

    rgb = np.random.default_rng(5).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    normalized = ((rgb / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype(np.float32)
    expected = torch_logits(a0_checkpoints["model"], normalized)
    model = convert_checkpoint(
        a0_checkpoints["fused"], include_preprocessing=True, input_size=64
    ).model
    assert_close_to_timm(model.predict(rgb, verbose=0), expected)
