"""The variant table and block_plan (numpy only): the structure the paper and timm describe."""

from __future__ import annotations

import pytest

from keras_repvgg.core.configs import VARIANTS, block_plan, get_variant, match_variant
from keras_repvgg.core.errors import KerasRepVGGError


def test_every_variant_has_the_papers_depths_and_the_stem_rule():
    for variant in VARIANTS.values():
        plan = block_plan(variant)
        assert len(plan) == 1 + sum(variant.depths)
        assert plan[0].name == "stem" and plan[0].out_channels == min(64, int(64 * variant.width_multipliers[0]))
        assert [s.feature for s in plan].count(True) == 5  # timm's five feature maps
        assert plan[-1].out_channels == variant.stage_widths[-1]


def test_first_block_of_each_stage_halves_the_resolution_and_has_no_identity():
    plan = block_plan(get_variant("repvgg_b0"))
    strided = [s.name for s in plan if s.stride == 2]
    assert strided == ["stem", "stages.0.0", "stages.1.0", "stages.2.0", "stages.3.0"]
    assert not any(s.has_identity for s in plan if s.stride == 2)
    assert all(s.has_identity for s in plan if s.stride == 1)


def test_every_second_block_is_grouped_in_grouped_variants():
    plan = block_plan(get_variant("repvgg_b1g4"))[1:]  # the stem is never grouped
    assert [s.groups for s in plan[:6]] == [1, 4, 1, 4, 1, 4]
    assert all(s.groups == 1 for s in block_plan(get_variant("repvgg_b1")))


def test_squeeze_excitation_only_in_d2se():
    assert all(s.se_channels for s in block_plan(get_variant("repvgg_d2se")))
    assert block_plan(get_variant("repvgg_d2se"))[-1].se_channels == round(2560 / 16)
    assert not any(s.se_channels for s in block_plan(get_variant("repvgg_a0")))


def test_names_in_every_spelling_and_a_clear_error():
    for name in ("repvgg_b1g4", "b1g4", "RepVGGB1g4", "RepVGG-B1g4", "repvgg_b1g4.rvgg_in1k"):
        assert get_variant(name).name == "repvgg_b1g4"
    with pytest.raises(KerasRepVGGError, match="Unknown RepVGG variant 'repvgg_z9'"):
        get_variant("repvgg_z9")


def test_shapes_identify_exactly_one_variant():
    for variant in VARIANTS.values():
        blocks = {s.name: (s.out_channels, s.in_channels // s.groups) for s in block_plan(variant)}
        assert match_variant(blocks, bool(variant.se_ratio)) == variant
    a0 = {s.name: (s.out_channels, s.in_channels) for s in block_plan(get_variant("repvgg_a0"))}
    del a0["stages.2.13"]
    assert match_variant(a0, False) is None
