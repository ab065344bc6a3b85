"""Layer names: timm's module paths, spelled here once.

Weights map between timm checkpoints and Keras layers by these names, so every module
that looks a layer up builds the name here.
"""

from __future__ import annotations

STEM = "stem"
HEAD_FC = "head.fc"
HEAD_POOL = "head.global_pool"
PREPROCESS = "preprocess"  # the in-graph normalization, layer PREPROCESS.normalize
DESCRIPTION = "repvgg.description"

# The parts of one block, after its name ("stem", "stages.2.13").
REPARAM_CONV = "reparam_conv"  # deploy form: the fused 3x3 conv with bias
CONV_KXK = "conv_kxk"  # training form: 3x3 conv + BatchNorm
CONV_1X1 = "conv_1x1"  # training form: 1x1 conv + BatchNorm
IDENTITY = "identity"  # training form: the identity BatchNorm
IDENTITY_SCALE = "identity_scale"  # deploy-identity form: the identity as a per-channel scale
SE = "attn"  # squeeze-excitation (D2se): SE_FC1, SE_FC2 and the gate under it
SE_FC1, SE_FC2 = "attn.fc1", "attn.fc2"


def part(block: str, *parts: str) -> str:
    """`part("stages.1.0", CONV_KXK, "conv")` -> "stages.1.0.conv_kxk.conv"."""
    return ".".join((block, *parts))


def block_of(layer_name: str, *parts: str) -> "str | None":
    """The block whose `parts` the layer is (`block_of("stem.reparam_conv", REPARAM_CONV)`
    is "stem"), else None."""
    suffix = "." + ".".join(parts)
    return layer_name[: -len(suffix)] if layer_name.endswith(suffix) else None
