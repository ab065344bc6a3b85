"""Parameter counts computed from the config table, without building a model."""

from __future__ import annotations

from keras_repvgg.core.configs import VariantConfig, block_plan, num_features


def deploy_parameter_count(variant: VariantConfig, classes: int = 1000) -> int:
    """Weights and biases of the fused network, classifier included."""
    total = 0
    for spec in block_plan(variant):
        total += 9 * (spec.in_channels // spec.groups) * spec.out_channels + spec.out_channels
        if spec.se_channels:
            c, r = spec.out_channels, spec.se_channels
            total += c * r + r + r * c + c
    return total + num_features(variant) * classes + classes


def deploy_multiply_adds(variant: VariantConfig, size: int = 224, classes: int = 1000) -> int:
    """Multiply-adds of one fused forward pass at size x size (convs, SE and classifier)."""
    total, side = 0, size
    for spec in block_plan(variant):
        side = (side + 2 - 3) // spec.stride + 1  # 3x3, padding 1
        total += side * side * 9 * (spec.in_channels // spec.groups) * spec.out_channels
        if spec.se_channels:
            total += 2 * spec.out_channels * spec.se_channels
    return total + num_features(variant) * classes
