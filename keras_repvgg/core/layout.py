"""A block's sublayers in each form and the checkpoint keys each takes: the one table.

Keras layer names are timm's module paths (`stages.2.13.conv_kxk.bn`), so a sublayer's
timm checkpoint keys are its name and a parameter (`stages.2.13.conv_kxk.bn.running_var`).
The official repository (DingXiaoH/RepVGG) names the same modules differently
(`stage3.13.rbr_dense.bn.running_var`); `official_key` and `timm_key` translate.

The forms (`description.FORMS`):
- train: a 3x3 conv + BatchNorm (`conv_kxk`), a 1x1 conv + BatchNorm (`conv_1x1`) and,
  where the shape allows, an identity BatchNorm (`identity`), added;
- deploy: one 3x3 conv with bias (`reparam_conv`);
- deploy-identity: that conv with the identity kept apart as a per-channel scale of the
  input (`identity_scale`), which quantizes to int8 far better.
Each form then has squeeze-excitation where the variant has it (`attn`, D2se) and a ReLU.

The builder, both checkpoint mappings, `reparameterize` and the equalizer read names and
keys here. No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Collection, Optional

import numpy as np

from keras_repvgg.core.configs import BlockSpec
from keras_repvgg.core.names import HEAD_FC, STEM

LayerWeights = dict[str, list[np.ndarray]]  # Keras layer name -> its weights, in set_weights order

# A block's parts, after its name ("stem", "stages.2.13"), as timm names them.
REPARAM_CONV = "reparam_conv"  # deploy forms: the fused 3x3 conv with bias
CONV_KXK = "conv_kxk"  # train: 3x3 conv + BatchNorm
CONV_1X1 = "conv_1x1"  # train: 1x1 conv + BatchNorm (after a subsample where the block strides)
IDENTITY = "identity"  # train: the identity BatchNorm
IDENTITY_SCALE = "identity_scale"  # deploy-identity: the identity as a per-channel scale (ours, not timm's)
SE = "attn"  # squeeze-excitation (D2se): fc1, fc2 and the gate under it
SE_FC1, SE_FC2 = f"{SE}.fc1", f"{SE}.fc2"
CONV, BN = "conv", "bn"  # a conv + BatchNorm branch's two modules
SUBSAMPLE = "subsample"  # ours: a strided 1x1 conv is built as a subsample, then a 1x1 conv

# The official repository's names for the same modules (key parts; see `official_key`).
OFFICIAL_PARTS: tuple[tuple[str, str], ...] = (
    (CONV_KXK, "rbr_dense"),
    (CONV_1X1, "rbr_1x1"),
    (IDENTITY, "rbr_identity"),
    (REPARAM_CONV, "rbr_reparam"),
    (SE_FC1, "se.down"),
    (SE_FC2, "se.up"),
)
OFFICIAL_HEAD_FC = "linear"

# What each kind of weighted module holds in a checkpoint, in the order Keras' set_weights
# takes the converted arrays, and what it holds that carries no weight.
_CONV = ("weight",)
_CONV_BIAS = ("weight", "bias")
_BATCHNORM = ("weight", "bias", "running_mean", "running_var")
_BATCHNORM_COUNTER = ("num_batches_tracked",)


def part(block: str, *parts: str) -> str:
    """`part("stages.1.0", CONV_KXK, "conv")` -> "stages.1.0.conv_kxk.conv"."""
    return ".".join((block, *parts))


def block_of(layer_name: str, *parts: str) -> Optional[str]:
    """The block whose `parts` the layer is (`block_of("stem.reparam_conv", REPARAM_CONV)`
    is "stem"), else None."""
    suffix = "." + ".".join(parts)
    return layer_name[: -len(suffix)] if layer_name.endswith(suffix) else None


@dataclasses.dataclass(frozen=True)
class Sublayer:
    """One Keras layer of a block, and the timm checkpoint entries it takes."""

    name: str  # the Keras layer name, which is timm's module path
    params: tuple[str, ...] = ()  # checkpoint entries under `name`, in Keras' set_weights order
    skipped: tuple[str, ...] = ()  # checkpoint entries under `name` that carry no weight

    def key(self, param: str) -> str:
        return part(self.name, param)

    @property
    def keys(self) -> tuple[str, ...]:
        """timm's checkpoint keys of the weights."""
        return tuple(self.key(p) for p in self.params)

    @property
    def official_keys(self) -> tuple[str, ...]:
        """The official repository's keys of the same weights."""
        return tuple(official_key(k) for k in self.keys)


@dataclasses.dataclass(frozen=True)
class ConvBN:
    """A training-form branch: a bias-free conv, then a BatchNorm."""

    conv: Sublayer
    bn: Sublayer


@dataclasses.dataclass(frozen=True)
class SqueezeExcite:
    """timm's SEModule: mean over space, 1x1 conv, ReLU, 1x1 conv, sigmoid gate, scale."""

    pool: Sublayer
    fc1: Sublayer
    act: Sublayer
    fc2: Sublayer
    gate: Sublayer
    scale: Sublayer


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """Every sublayer of one block in one form; a part the form lacks is None."""

    block: str  # timm's module path of the block: "stem", "stages.2.13"
    form: str
    pad: Optional[Sublayer]  # stride 2: the explicit padding before the 3x3 conv
    reparam_conv: Optional[Sublayer]  # deploy forms
    identity_scale: Optional[Sublayer]  # deploy-identity, where the block has an identity
    conv_kxk: Optional[ConvBN]  # train
    subsample: Optional[Sublayer]  # train, where the block strides
    conv_1x1: Optional[ConvBN]  # train
    identity: Optional[Sublayer]  # train, where the block has an identity
    add: Optional[Sublayer]  # sums the branches (train, deploy-identity with an identity)
    se: Optional[SqueezeExcite]
    act: Sublayer

    @property
    def sublayers(self) -> tuple[Sublayer, ...]:
        """Every sublayer, in build order."""
        found: list[Optional[Sublayer]] = [self.pad]
        if self.conv_kxk is not None and self.conv_1x1 is not None:
            found += [self.conv_kxk.conv, self.conv_kxk.bn, self.subsample, self.conv_1x1.conv, self.conv_1x1.bn,
                      self.identity]
        else:
            found += [self.reparam_conv, self.identity_scale]
        found.append(self.add)
        if self.se is not None:
            found += [self.se.pool, self.se.fc1, self.se.act, self.se.fc2, self.se.gate, self.se.scale]
        found.append(self.act)
        return tuple(s for s in found if s is not None)

    @property
    def weighted(self) -> tuple[Sublayer, ...]:
        """The sublayers with weights, in build order."""
        found: list[Optional[Sublayer]] = [self.reparam_conv, self.identity_scale]
        for branch in (self.conv_kxk, self.conv_1x1):
            found += [branch.conv, branch.bn] if branch else []
        found.append(self.identity)
        found += [self.se.fc1, self.se.fc2] if self.se else []
        return tuple(s for s in found if s is not None)


def _conv_bn(block: str, branch: str) -> ConvBN:
    return ConvBN(
        Sublayer(part(block, branch, CONV), _CONV),
        Sublayer(part(block, branch, BN), _BATCHNORM, _BATCHNORM_COUNTER),
    )


def _squeeze_excite(block: str) -> SqueezeExcite:
    name = part(block, SE)
    return SqueezeExcite(
        pool=Sublayer(f"{name}.pool"), fc1=Sublayer(part(block, SE_FC1), _CONV_BIAS), act=Sublayer(f"{name}.act"),
        fc2=Sublayer(part(block, SE_FC2), _CONV_BIAS), gate=Sublayer(f"{name}.gate"), scale=Sublayer(f"{name}.scale"),
    )


def block_layout(spec: BlockSpec, form: str, identity_blocks: Optional[Collection[str]] = None) -> BlockLayout:
    """The sublayers of the block `spec` in `form` (one of `description.FORMS`).

    identity_blocks (deploy-identity): the blocks whose identity is apart; None: all that have
    one (`ModelDescription.identity_blocks`). In the others it is folded, as in deploy."""
    n = spec.name
    train = form == "train"
    split_identity = (form == "deploy-identity" and spec.has_identity
                      and (identity_blocks is None or n in identity_blocks))
    return BlockLayout(
        block=n,
        form=form,
        pad=Sublayer(f"{n}.pad") if spec.stride == 2 else None,
        reparam_conv=None if train else Sublayer(part(n, REPARAM_CONV), _CONV_BIAS),
        # Ours: a depthwise 1x1 conv, weights (1, 1, C, 1); no checkpoint holds it.
        identity_scale=Sublayer(part(n, IDENTITY_SCALE)) if split_identity else None,
        conv_kxk=_conv_bn(n, CONV_KXK) if train else None,
        subsample=Sublayer(part(n, CONV_1X1, SUBSAMPLE)) if train and spec.stride > 1 else None,
        conv_1x1=_conv_bn(n, CONV_1X1) if train else None,
        identity=Sublayer(part(n, IDENTITY), _BATCHNORM, _BATCHNORM_COUNTER) if train and spec.has_identity else None,
        add=Sublayer(f"{n}.add") if train or split_identity else None,
        se=_squeeze_excite(n) if spec.se_channels else None,
        act=Sublayer(f"{n}.act"),
    )


# --- keys read before the variant is known ----------------------------------------------
HEAD = Sublayer(HEAD_FC, _CONV_BIAS)  # the classifier: weight (classes, features), bias
# A block's 3x3 kernel in either form; group 1 is the block.
BLOCK_KERNEL_KEY = re.compile(rf"^({STEM}|stages\.\d+\.\d+)\.({REPARAM_CONV}|{CONV_KXK}\.{CONV})\.weight$")
SE_KEY_SUFFIX = f".{SE_FC1}.weight"  # a checkpoint with squeeze-excitation has keys ending so


def fused_kernel_key(block: str) -> str:
    """The deploy form's 3x3 kernel: present in a checkpoint whose block is already fused."""
    return part(block, REPARAM_CONV, "weight")


def branch_kernel_key(block: str) -> str:
    """The training form's 3x3 kernel."""
    return part(block, CONV_KXK, CONV, "weight")


def is_fused_kernel_key(key: str) -> bool:
    return key.endswith(f".{REPARAM_CONV}.weight")


# --- the official repository's names ----------------------------------------------------
# stage0 is timm's stem, stageN its stages.(N-1), linear its head.fc.


def timm_key(official: str) -> str:
    """An official checkpoint key in timm's names."""
    key = re.sub(r"^stage0\.", f"{STEM}.", official)
    key = re.sub(r"^stage([1-4])\.", lambda m: f"stages.{int(m.group(1)) - 1}.", key)
    key = re.sub(rf"^{OFFICIAL_HEAD_FC}\.", f"{HEAD_FC}.", key)
    for timm, theirs in OFFICIAL_PARTS:
        key = key.replace(f".{theirs}.", f".{timm}.")
    return key


def official_key(timm: str) -> str:
    """A timm checkpoint key in the official repository's names."""
    key = re.sub(rf"^{STEM}\.", "stage0.", timm)
    key = re.sub(r"^stages\.(\d)\.", lambda m: f"stage{int(m.group(1)) + 1}.", key)
    key = re.sub(rf"^{re.escape(HEAD_FC)}\.", f"{OFFICIAL_HEAD_FC}.", key)
    for ours, theirs in OFFICIAL_PARTS:
        key = key.replace(f".{ours}.", f".{theirs}.")
    return key
