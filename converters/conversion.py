"""SOURCE -> Keras model: resolve the checkpoint, pick the variant, fuse, build, assign."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

from keras_repvgg.core.configs import VARIANTS, Preprocessing, VariantConfig, get_variant
from keras_repvgg.core.description import ModelDescription
from keras_repvgg.core.layout import is_fused_kernel_key
from keras_repvgg.models.backend import keras
from keras_repvgg.models.model import assign_weights, build

from .errors import CheckpointError
from .readers import TensorReader
from .sources import Checkpoint, checkpoint_labels, config_value, resolve_source
from .timm_weights import infer_variant, num_classes, timm_to_keras


@dataclasses.dataclass
class Converted:
    """A converted model and what was learnt about its checkpoint on the way."""

    model: keras.Model
    variant: VariantConfig
    checkpoint: Checkpoint
    preprocessing: Preprocessing  # the eval transform, with config.json's overrides
    label_names: Optional[list[str]]
    fused_blocks: int  # blocks that came already reparameterized
    total_blocks: int


def _variant_for(checkpoint: Checkpoint, reader, arch: Optional[str]) -> VariantConfig:
    if arch:
        return get_variant(arch)
    architecture = checkpoint.config.get("architecture")
    if architecture:
        if architecture not in VARIANTS:
            raise CheckpointError(
                f"{checkpoint.weights_path}: config.json names architecture {architecture!r}, "
                f"which is not a RepVGG variant ({', '.join(VARIANTS)})"
            )
        return VARIANTS[architecture]
    return infer_variant(reader)


def checkpoint_preprocessing(
    config: dict[str, Any], variant: VariantConfig, input_size: Optional[int] = None
) -> Preprocessing:
    """The variant's eval transform, overridden by config.json and then by input_size."""
    base = variant.preprocessing
    size = config_value(config, "input_size")
    size = int(size[-1]) if isinstance(size, (list, tuple)) and size else base.input_size
    return Preprocessing(
        input_size=int(input_size or size),
        crop_pct=float(config_value(config, "crop_pct") or base.crop_pct),
        interpolation=str(config_value(config, "interpolation") or base.interpolation),
        mean=tuple(config_value(config, "mean") or base.mean),
        std=tuple(config_value(config, "std") or base.std),
    )


def convert_checkpoint(
    source: "str | os.PathLike[str]",
    arch: Optional[str] = None,
    *,
    form: str = "deploy",
    input_size: Optional[int] = None,
    input_shape: Optional[Sequence[Optional[int]]] = None,
    input_tensor=None,
    include_top: bool = True,
    include_preprocessing: bool = False,
    pooling: Optional[str] = None,
    classes: Optional[int] = None,
    classifier_activation: Optional[str] = None,
    features_only: bool = False,
    name: Optional[str] = None,
    allow_nonfinite: bool = False,
) -> Converted:
    """Convert a RepVGG checkpoint into a Keras model.

    SOURCE is a timm safetensors file, a folder with config.json, a hub id, or an
    official RepVGG .pth file. form="deploy" fuses the branches; form="train"
    loads a training-form checkpoint one to one, for fine-tuning with the
    branches (then `keras_repvgg.reparameterize`). By default the model computes
    what timm's model computes: normalized float NHWC input at the checkpoint's
    input size, logits out. Weights holding NaN or infinity are refused
    (NonFiniteWeightsError) unless allow_nonfinite=True.
    """
    if arch:
        get_variant(arch)  # an unknown name fails before any file is read
    checkpoint, reader = _open(source, allow_nonfinite)
    variant = _variant_for(checkpoint, reader, arch)
    request = ModelDescription(
        variant.name, form=form, include_top=include_top, classifier_activation=classifier_activation,
        pooling=pooling, features_only=features_only, include_preprocessing=include_preprocessing,
    )
    return _convert(source, checkpoint, reader, request, classes, input_size,
                    input_shape=input_shape, input_tensor=input_tensor, name=name)


def convert_to(
    source: "str | os.PathLike[str]",
    request: ModelDescription,
    classes: Optional[int] = None,
    *,
    input_shape: Optional[Sequence[Optional[int]]] = None,
    input_tensor=None,
    name: Optional[str] = None,
) -> Converted:
    """Convert a checkpoint of `request.variant` into the model `request` describes (form,
    head, input); the checkpoint supplies the class count (`classes`, where given, must be
    the checkpoint's), the eval transform, the labels, the source and the licence."""
    checkpoint, reader = _open(source, allow_nonfinite=False)
    return _convert(source, checkpoint, reader, request, classes, None,
                    input_shape=input_shape, input_tensor=input_tensor, name=name)


def _open(source: "str | os.PathLike[str]", allow_nonfinite: bool) -> tuple[Checkpoint, TensorReader]:
    checkpoint = resolve_source(source)
    reader = checkpoint.reader()
    reader.allow_nonfinite = allow_nonfinite
    return checkpoint, reader


def _convert(
    source: "str | os.PathLike[str]",
    checkpoint: Checkpoint,
    reader: TensorReader,
    request: ModelDescription,
    classes: Optional[int],
    input_size: Optional[int],
    **graph: Any,
) -> Converted:
    """Build `request` with what the checkpoint says of itself, and assign its weights."""
    variant = get_variant(request.variant)
    head_classes = num_classes(reader)
    include_top = request.include_top and not request.features_only
    if include_top:
        if head_classes is None:
            raise CheckpointError(
                f"{checkpoint.weights_path}: no classifier ('head.fc.weight'); "
                "convert it with include_top=False"
            )
        if classes is not None and classes != head_classes:
            raise CheckpointError(
                f"classes={classes} with include_top=True, but the checkpoint's classifier "
                f"has {head_classes} classes; use include_top=False to put a new head on it"
            )
    fused_blocks = sum(1 for k in reader.keys() if is_fused_kernel_key(k))
    preprocessing = checkpoint_preprocessing(checkpoint.config, variant, input_size)
    labels = checkpoint_labels(checkpoint, source, head_classes or 0)
    description = request.replace(
        include_top=include_top,
        classes=head_classes or 0,
        preprocessing=preprocessing,
        # Recorded as the checkpoint states them (ImageNet's written out too), never implied.
        labels=labels if include_top else None,
        # A hub id as given; a file by its name (a local path says nothing to an app).
        source=str(source) if not os.path.exists(source) else os.path.basename(os.path.normpath(source)),
        license=config_value(checkpoint.config, "license") or None,
    )
    model = build(description, initialize=False, **graph)
    assign_weights(model, timm_to_keras(reader, variant, head_classes or 0, include_top, request.form))
    return Converted(
        model=model,
        variant=variant,
        checkpoint=checkpoint,
        preprocessing=preprocessing,
        label_names=labels,
        fused_blocks=fused_blocks,
        total_blocks=sum(variant.depths) + 1,
    )


def convert(source: "str | os.PathLike[str]", arch: Optional[str] = None, **kwargs) -> keras.Model:
    """`convert_checkpoint(...)`, returning just the Keras model."""
    return convert_checkpoint(source, arch, **kwargs).model
