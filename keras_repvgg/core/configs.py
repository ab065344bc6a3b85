"""The RepVGG variants as data: one table, no code per variant.

Stage widths are the base widths (64, 128, 256, 512) times a per-stage width
multiplier; the stem is min(64, 64 * first multiplier) wide. In grouped
variants every second block (counting blocks across all stages, the stem not
included) is a grouped convolution, as in the paper and in timm.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from keras_repvgg.core.errors import KerasRepVGGError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BASE_WIDTHS = (64, 128, 256, 512)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """The eval transform of timm's pretrained config."""

    input_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclasses.dataclass(frozen=True)
class VariantConfig:
    name: str  # timm's architecture name, e.g. "repvgg_a0"
    depths: tuple[int, int, int, int]
    width_multipliers: tuple[float, float, float, float]
    groups: int = 1  # groups of the grouped blocks; 1 means no grouped blocks
    se_ratio: float = 0.0  # squeeze-excitation reduction; 0 means no SE
    timm_tag: Optional[str] = None  # e.g. "repvgg_a0.rvgg_in1k"; None where timm has no weights
    preprocessing: Preprocessing = Preprocessing()

    @property
    def stem_width(self) -> int:
        return min(64, int(64 * self.width_multipliers[0]))

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return tuple(int(c * w) for c, w in zip(BASE_WIDTHS, self.width_multipliers, strict=True))

    @property
    def keras_name(self) -> str:
        """`repvgg_b1g4` -> `RepVGGB1g4`, the name of the Keras function."""
        return "RepVGG" + self.name.split("_", 1)[1].capitalize()


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One RepVGG block: a 3x3 conv (fused form) with optional SE, then ReLU."""

    name: str  # timm's module path, e.g. "stem" or "stages.2.13"
    in_channels: int
    out_channels: int
    stride: int
    groups: int
    se_channels: int  # 0 without SE
    feature: bool = False  # ends the stem or a stage: one of timm's five feature maps

    @property
    def has_identity(self) -> bool:
        """Whether the training form has an identity (BatchNorm) branch."""
        return self.in_channels == self.out_channels and self.stride == 1


def _variant(name: str, depths: tuple[int, int, int, int], widths: tuple[float, float, float, float],
             groups: int = 1, **kw: Any) -> VariantConfig:
    return VariantConfig(name=name, depths=depths, width_multipliers=widths, groups=groups, **kw)


_A = (2, 4, 14, 1)
_B = (4, 6, 16, 1)
_D = (8, 14, 24, 1)

VARIANTS: dict[str, VariantConfig] = {
    v.name: v
    for v in (
        _variant("repvgg_a0", _A, (0.75, 0.75, 0.75, 2.5), timm_tag="repvgg_a0.rvgg_in1k"),
        _variant("repvgg_a1", _A, (1, 1, 1, 2.5), timm_tag="repvgg_a1.rvgg_in1k"),
        _variant("repvgg_a2", _A, (1.5, 1.5, 1.5, 2.75), timm_tag="repvgg_a2.rvgg_in1k"),
        _variant("repvgg_b0", _B, (1, 1, 1, 2.5), timm_tag="repvgg_b0.rvgg_in1k"),
        _variant("repvgg_b1", _B, (2, 2, 2, 4), timm_tag="repvgg_b1.rvgg_in1k"),
        _variant("repvgg_b1g2", _B, (2, 2, 2, 4), groups=2),
        _variant("repvgg_b1g4", _B, (2, 2, 2, 4), groups=4, timm_tag="repvgg_b1g4.rvgg_in1k"),
        _variant("repvgg_b2", _B, (2.5, 2.5, 2.5, 5), timm_tag="repvgg_b2.rvgg_in1k"),
        _variant("repvgg_b2g2", _B, (2.5, 2.5, 2.5, 5), groups=2),
        _variant("repvgg_b2g4", _B, (2.5, 2.5, 2.5, 5), groups=4, timm_tag="repvgg_b2g4.rvgg_in1k"),
        _variant("repvgg_b3", _B, (3, 3, 3, 5), timm_tag="repvgg_b3.rvgg_in1k"),
        _variant("repvgg_b3g2", _B, (3, 3, 3, 5), groups=2),
        _variant("repvgg_b3g4", _B, (3, 3, 3, 5), groups=4, timm_tag="repvgg_b3g4.rvgg_in1k"),
        _variant(
            "repvgg_d2se", _D, (2.5, 2.5, 2.5, 5), se_ratio=1 / 16,
            timm_tag="repvgg_d2se.rvgg_in1k",
            preprocessing=Preprocessing(input_size=320, crop_pct=1.0),
        ),
    )
}


def get_variant(name: str) -> VariantConfig:
    """Look a variant up by any of its names.

    timm's (`repvgg_b1g4`, or a tag such as `repvgg_b1g4.rvgg_in1k`), the
    official repository's (`RepVGG-B1g4`), the Keras function's (`RepVGGB1g4`)
    or the short one (`b1g4`).
    """
    short = name.strip().lower().split(".", 1)[0].replace("repvgg", "").strip("-_")
    variant = VARIANTS.get(f"repvgg_{short}")
    if variant is None:
        raise KerasRepVGGError(f"Unknown RepVGG variant {name!r}; known: {', '.join(VARIANTS)}")
    return variant


def block_plan(variant: VariantConfig, in_channels: int = 3) -> list[BlockSpec]:
    """Every block of the network in order, stem first, with timm's module names."""

    def se(out: int) -> int:
        # timm rounds channels * ratio to the nearest integer (divisor 1).
        return max(1, int(out * variant.se_ratio + 0.5)) if variant.se_ratio else 0

    plan = [BlockSpec("stem", in_channels, variant.stem_width, 2, 1, se(variant.stem_width), True)]
    channels, index = variant.stem_width, 0
    for stage, (depth, width) in enumerate(zip(variant.depths, variant.stage_widths, strict=True)):
        for block in range(depth):
            groups = variant.groups if variant.groups > 1 and index % 2 == 1 else 1
            stride = 2 if block == 0 else 1
            name, last = f"stages.{stage}.{block}", block == depth - 1
            plan.append(BlockSpec(name, channels, width, stride, groups, se(width), last))
            channels, index = width, index + 1
    return plan


def num_features(variant: VariantConfig) -> int:
    """Channels entering the classifier."""
    return variant.stage_widths[-1]


def match_variant(
    blocks: dict[str, tuple[int, int]], has_se: bool, in_channels: int = 3
) -> Optional[VariantConfig]:
    """The variant whose blocks are exactly these: name -> (out channels, in channels per group)."""
    for variant in VARIANTS.values():
        expected = {
            s.name: (s.out_channels, s.in_channels // s.groups)
            for s in block_plan(variant, in_channels)
        }
        if expected == blocks and has_se == bool(variant.se_ratio):
            return variant
    return None
