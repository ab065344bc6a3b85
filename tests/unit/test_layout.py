"""A block's sublayers and checkpoint keys per form (numpy only). The expected names are
timm's module paths and the official repository's keys, written out here."""

from __future__ import annotations

import pytest

from keras_repvgg.core.configs import block_plan, get_variant
from keras_repvgg.core.description import FORMS, ModelDescription
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.core.layout import HEAD, block_layout, official_key, timm_key

BN = ("weight", "bias", "running_mean", "running_var")


def _spec(variant: str, name: str):
    return next(s for s in block_plan(get_variant(variant)) if s.name == name)


def test_a_training_block_with_identity_takes_timms_keys():
    layout = block_layout(_spec("repvgg_b1g4", "stages.2.13"), "train")
    assert [s.name for s in layout.weighted] == [
        "stages.2.13.conv_kxk.conv", "stages.2.13.conv_kxk.bn", "stages.2.13.conv_1x1.conv",
        "stages.2.13.conv_1x1.bn", "stages.2.13.identity",
    ]
    assert layout.conv_kxk is not None and layout.identity is not None
    assert layout.conv_kxk.conv.keys == ("stages.2.13.conv_kxk.conv.weight",)
    assert layout.conv_kxk.bn.keys == tuple(f"stages.2.13.conv_kxk.bn.{p}" for p in BN)
    assert layout.identity.skipped == ("num_batches_tracked",)
    assert layout.identity.official_keys[-1] == "stage3.13.rbr_identity.running_var"
    assert (layout.pad, layout.subsample, layout.reparam_conv, layout.se) == (None, None, None, None)
    assert layout.add is not None and layout.add.name == "stages.2.13.add"


def test_a_strided_training_block_subsamples_before_its_1x1_conv():
    layout = block_layout(_spec("repvgg_a0", "stem"), "train")
    assert layout.pad is not None and layout.pad.name == "stem.pad"
    assert layout.subsample is not None and layout.subsample.name == "stem.conv_1x1.subsample"
    assert layout.subsample.keys == ()  # no weights: the same checkpoint keys as timm's strided 1x1 conv
    assert layout.identity is None


@pytest.mark.parametrize("form", ["deploy", "deploy-identity"])
def test_deploy_blocks_hold_one_conv_with_bias_and_the_identity_apart_on_request(form):
    spec = _spec("repvgg_d2se", "stages.0.1")
    layout = block_layout(spec, form)
    assert layout.reparam_conv is not None
    assert layout.reparam_conv.keys == ("stages.0.1.reparam_conv.weight", "stages.0.1.reparam_conv.bias")
    assert layout.reparam_conv.official_keys == ("stage1.1.rbr_reparam.weight", "stage1.1.rbr_reparam.bias")
    assert layout.conv_kxk is layout.conv_1x1 is layout.identity is None
    split = form == "deploy-identity"
    assert (layout.identity_scale is not None) == split and (layout.add is not None) == split
    if layout.identity_scale is not None:
        assert layout.identity_scale.name == "stages.0.1.identity_scale" and layout.identity_scale.keys == ()
    assert layout.se is not None
    assert layout.se.fc1.official_keys == ("stage1.1.se.down.weight", "stage1.1.se.down.bias")
    assert layout.se.fc2.keys == ("stages.0.1.attn.fc2.weight", "stages.0.1.attn.fc2.bias")
    assert layout.act.name == "stages.0.1.act"


def test_every_form_names_each_layer_once():
    for form in FORMS:
        for spec in block_plan(get_variant("repvgg_d2se")):
            names = [s.name for s in block_layout(spec, form).weighted]
            assert len(names) == len(set(names)) and all(n.startswith(spec.name + ".") for n in names)


def test_official_and_timm_keys_translate_both_ways():
    pairs = {
        "stem.conv_kxk.conv.weight": "stage0.rbr_dense.conv.weight",
        "stages.3.0.conv_1x1.bn.num_batches_tracked": "stage4.0.rbr_1x1.bn.num_batches_tracked",
        "stages.0.1.identity.weight": "stage1.1.rbr_identity.weight",
        "head.fc.weight": "linear.weight",
        HEAD.key("bias"): "linear.bias",
    }
    for timm, official in pairs.items():
        assert official_key(timm) == official and timm_key(official) == timm


def test_a_description_resolves_to_what_a_model_records():
    d = ModelDescription("repvgg_a0", classes=5, pooling="avg", features_only=True).resolved(96)
    assert (d.include_top, d.classes, d.classifier_activation, d.pooling) == (False, 0, None, None)
    assert d.preprocessing.input_size == 96
    assert ModelDescription("repvgg_a0", include_top=False, pooling="max").resolved(None).pooling == "max"
    for bad, match in ((dict(form="fused"), "form"), (dict(pooling="sum"), "pooling"), (dict(classes=0), "classes"),
                       (dict(classes=2, labels=("a",)), "1 labels for a model with 2 classes")):
        with pytest.raises(KerasRepVGGError, match=match):
            ModelDescription("repvgg_a0", **bad).resolved(None)  # type: ignore[arg-type]
