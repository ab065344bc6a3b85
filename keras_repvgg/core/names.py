"""Layer names: timm's module paths, spelled here once.

Weights map between timm checkpoints and Keras layers by these names. The network's own
layers are named here; a block's sublayers (`stem.reparam_conv`, `stages.2.13.conv_kxk.bn`)
in `layout`.
"""

from __future__ import annotations

STEM = "stem"
HEAD_FC = "head.fc"
HEAD_POOL = "head.global_pool"
PREPROCESS = "preprocess"  # the in-graph normalization, layer PREPROCESS.normalize
DESCRIPTION = "repvgg.description"
