"""Training form -> deploy form: the same network with each block's branches fused.

The fusion is `fusion.fuse_block`, the same function the checkpoint converter
uses; here its inputs come from the Keras layers instead of a checkpoint.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from .backend import keras
from .configs import Preprocessing, VariantConfig, block_plan, match_variant
from .fusion import BatchNorm, fuse_block, fuse_block_keep_identity
from .model import LayerWeights, assign_weights, build_repvgg


def _bn(layer) -> BatchNorm:
    gamma, beta, mean, var = layer.get_weights()
    return BatchNorm(gamma, beta, mean, var, eps=layer.epsilon)


def _variant_of(model: keras.Model) -> tuple[VariantConfig, int]:
    blocks, has_se, in_channels = {}, False, 3
    for layer in model.layers:
        if layer.name.endswith(".conv_kxk.conv"):
            kernel_shape = tuple(layer.kernel.shape)  # (3, 3, in / groups, out)
            blocks[layer.name[: -len(".conv_kxk.conv")]] = (kernel_shape[3], kernel_shape[2])
            if layer.name == "stem.conv_kxk.conv":
                in_channels = kernel_shape[2]
        has_se = has_se or layer.name.endswith(".attn.fc1")
    variant = match_variant(blocks, has_se, in_channels)
    if variant is None:
        raise ValueError(
            f"model {model.name!r} is not a RepVGG training-form model "
            f"({len(blocks)} blocks with conv_kxk layers)"
        )
    return variant, in_channels


def _build_options(model: keras.Model, variant: VariantConfig) -> dict[str, Any]:
    """The build arguments that reproduce the model's inputs, outputs and head."""
    names = {layer.name: layer for layer in model.layers}
    options: dict[str, Any] = {
        "input_shape": tuple(model.input_shape[1:]),
        "features_only": len(model.outputs) == 5,
        "name": model.name,
        "include_top": "head.fc" in names,
    }
    if "preprocess.normalize" in names:
        config = names["preprocess.normalize"].get_config()
        mean = np.ravel(config["mean"]).tolist()
        std = [math.sqrt(v) for v in np.ravel(config["variance"])]
        options["include_preprocessing"] = True
        options["preprocessing"] = Preprocessing(mean=tuple(mean), std=tuple(std))
    if options["include_top"]:
        head = names["head.fc"]
        options["classes"] = head.units
        options["classifier_activation"] = head.get_config()["activation"]
    elif "head.global_pool" in names:
        pooling = names["head.global_pool"]
        options["pooling"] = "max" if isinstance(pooling, keras.layers.GlobalMaxPooling2D) else "avg"
    return options


def _fused_weights(
    model: keras.Model, variant: VariantConfig, in_channels: int, keep_identity: bool
) -> Iterator[LayerWeights]:
    get = model.get_layer
    names = {layer.name for layer in model.layers}
    for spec in block_plan(variant, in_channels):
        n = spec.name
        branches = (
            (get(f"{n}.conv_kxk.conv").get_weights()[0], _bn(get(f"{n}.conv_kxk.bn"))),
            (get(f"{n}.conv_1x1.conv").get_weights()[0], _bn(get(f"{n}.conv_1x1.bn"))),
        )
        identity = _bn(get(f"{n}.identity")) if spec.has_identity else None
        if keep_identity and identity is not None:
            kernel, bias, scale = fuse_block_keep_identity(*branches, identity, spec.groups)
            weights = {
                f"{n}.reparam_conv": [kernel, bias],
                f"{n}.identity_scale": [scale.reshape(1, 1, -1, 1)],  # depthwise (1, 1, C, 1)
            }
        else:
            weights = {f"{n}.reparam_conv": list(fuse_block(*branches, identity, spec.groups))}
        for part in ("attn.fc1", "attn.fc2"):
            if f"{n}.{part}" in names:
                weights[f"{n}.{part}"] = get(f"{n}.{part}").get_weights()
        yield weights
    if "head.fc" in names:
        yield {"head.fc": get("head.fc").get_weights()}


def is_training_form(model: keras.Model) -> bool:
    return any(layer.name.endswith(".conv_kxk.conv") for layer in model.layers)


def reparameterize(model: keras.Model, keep_identity: bool = False) -> keras.Model:
    """A new deploy-form model computing what the training-form `model` computes in inference.

    BatchNorm layers contribute their moving statistics, as in eval mode. With
    keep_identity=True the identity branch stays apart (conv + per-channel scale
    of the block's input, added): the same function, a graph that quantizes to
    int8 far better (see `fusion.fuse_block_keep_identity`).
    """
    variant, in_channels = _variant_of(model)
    form = "deploy-identity" if keep_identity else "deploy"
    deploy = build_repvgg(variant, form=form, initialize=False, **_build_options(model, variant))
    assign_weights(deploy, _fused_weights(model, variant, in_channels, keep_identity))
    return deploy
