"""timm parity on the current backend: every variant at 64 px (D2se at 96), both forms."""

from __future__ import annotations

import zlib

import pytest

from keras_repvgg.converters import convert_checkpoint
from keras_repvgg.models.backend import BACKEND

from helpers import (
    G2_VARIANTS,
    TIMM_VARIANTS,
    assert_close_to_timm,
    keras_logits,
    random_images,
    timm_checkpoint,
    timm_reference,
)


@pytest.mark.parametrize("arch", TIMM_VARIANTS + G2_VARIANTS)
def test_both_forms_match_timm(arch):
    """timm's training-form checkpoint into both forms: the deploy form fused by the
    converter (numpy, as on TensorFlow) and the training form's three branches."""
    size = 96 if arch == "repvgg_d2se" else 64
    seed = zlib.crc32(arch.encode()) % 1000
    x = random_images(2, size, seed=1)
    expected = timm_reference(arch, seed, x)
    checkpoint = timm_checkpoint(arch, seed)
    for form in ("deploy", "train"):
        converted = convert_checkpoint(checkpoint, form=form, input_size=size).model
        err = assert_close_to_timm(keras_logits(converted, x), expected)
        print(f"{BACKEND} {arch} {form}: {err:.2e} of the logit scale")
        del converted
