"""RepVGG as KerasHub classes: a `Backbone`, an `ImageClassifier`, its preprocessor and an
`ImageConverter` that applies timm's eval transform.

They are built from our own graph (`model.build`), with timm's layer names and the
model's description inside, so weights map by name both ways: `to_hub` wraps a model of
ours (a converted checkpoint) in them and `to_keras_model` gives one back, which is what
our exports and `predict` take. Importing this module registers the classes with Keras,
which is what lets `keras_hub.models.ImageClassifier.from_preset(folder)` find them;
`import keras_repvgg` does it as soon as `keras_hub` is imported (`registration.py`).

KerasHub runs on Keras 3 only. Its classifier gives logits (`activation=None`), as timm does.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from keras_repvgg.core import names, transform
from keras_repvgg.core.configs import Preprocessing, get_variant
from keras_repvgg.core.description import ModelDescription
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.models import model as graph
from keras_repvgg.models.backend import LEGACY_KERAS, keras
from keras_repvgg.models.resize import resize_and_crop

if LEGACY_KERAS:
    raise KerasRepVGGError("KerasHub needs Keras 3; unset TF_USE_LEGACY_KERAS to use keras_repvgg's KerasHub classes")

import keras_hub  # noqa: E402  (after the check above: under tf-keras it would fail less clearly)

PACKAGE = "keras_repvgg"
FORMS = ("deploy", "train")  # what a backbone may be; the identity-apart graph is an int8 export's


def _preprocessing(value: "Preprocessing | dict[str, Any] | None", variant: str) -> Preprocessing:
    if value is None:
        return get_variant(variant).preprocessing
    if isinstance(value, Preprocessing):
        return value
    return Preprocessing(**{**value, "mean": tuple(value["mean"]), "std": tuple(value["std"])})


def _preprocessing_dict(p: Preprocessing) -> dict[str, Any]:
    return {"input_size": p.input_size, "crop_pct": p.crop_pct, "interpolation": p.interpolation,
            "mean": list(p.mean), "std": list(p.std)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class RepVGGBackbone(keras_hub.models.Backbone):
    """The RepVGG network without its head: image in (normalized, NHWC), the last stage's
    feature map out. Layer names are timm's module paths.

    variant: timm's architecture name (`"repvgg_a0"`, ... see `keras_repvgg.VARIANTS`).
    form: "deploy" (one 3x3 conv per block) or "train" (three branches per block).
    image_shape: (height, width, 3); by default the eval transform's square size.
    preprocessing: the eval transform (`Preprocessing` or its dict); the variant's by default.
    source, license: the checkpoint the weights came from, and its licence, if known.
    """

    def __init__(self, variant: str, form: str = "deploy", image_shape: Optional[Sequence[int]] = None,
                 preprocessing: "Preprocessing | dict[str, Any] | None" = None, source: Optional[str] = None,
                 license: Optional[str] = None, dtype=None, **kwargs: Any):
        if form not in FORMS:
            raise KerasRepVGGError(f"a RepVGGBackbone's form must be one of {FORMS}, got {form!r}")
        p = _preprocessing(preprocessing, variant)
        image_shape = tuple(image_shape) if image_shape is not None else (p.input_size, p.input_size, 3)
        description = ModelDescription(variant, form, include_top=False, pooling=None, preprocessing=p,
                                       source=source, license=license)
        inner = graph.build(description, input_shape=image_shape)
        super().__init__(inputs=inner.inputs[0], outputs=inner.outputs[0], dtype=dtype, **kwargs)
        self.variant, self.form, self.image_shape = variant, form, image_shape
        self.preprocessing, self.source, self.license = p, source, license

    def to_keras_model(self) -> keras.Model:
        return to_keras_model(self)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "variant": self.variant, "form": self.form,
                "image_shape": list(self.image_shape), "preprocessing": _preprocessing_dict(self.preprocessing),
                "source": self.source, "license": self.license}


@keras.saving.register_keras_serializable(package=PACKAGE)
class RepVGGImageConverter(keras_hub.layers.ImageConverter):
    """Images (0-255 RGB, NHWC, any size) -> the model's input, by timm's eval transform:
    the shorter side resized to floor(size / crop_pct) (antialiased, rounded to 8-bit levels,
    as Pillow's resize gives), the centre crop of `size`, then (x / 255 - mean) / std.
    Every number comes from `core.transform`, as for `load_image` and the SavedModel."""

    backbone_cls = RepVGGBackbone

    def __init__(self, preprocessing: "Preprocessing | dict[str, Any] | None" = None,
                 variant: str = "repvgg_a0", **kwargs: Any):
        p = _preprocessing(preprocessing, variant)
        for key in ("image_size", "scale", "offset", "interpolation", "antialias", "crop_to_aspect_ratio"):
            kwargs.pop(key, None)  # ImageConverter's own settings: all follow from the eval transform
        scale, offset = transform.scale_and_offset(p)
        super().__init__(image_size=(p.input_size, p.input_size), scale=scale.astype(np.float32).tolist(),
                         offset=offset.astype(np.float32).tolist(), crop_to_aspect_ratio=False,
                         interpolation=transform.interpolation(p).tensorflow, antialias=True, **kwargs)
        self.preprocessing = p

    def _call_python(self, inputs):
        import tensorflow as tf

        if isinstance(inputs, (list, tuple)):
            inputs = np.stack([np.asarray(x) for x in inputs])  # equal-size images, as a batch
        tensorflow_in = isinstance(inputs, (tf.Tensor, tf.Variable))
        pixels = resize_and_crop(inputs if tensorflow_in else np.asarray(inputs), self.preprocessing)
        scale, offset = transform.scale_and_offset(self.preprocessing)
        x = pixels * scale.astype(np.float32) + offset.astype(np.float32)
        # In tf.data (KerasHub's pipelines, on any backend) TensorFlow's tensor; else the backend's.
        return x if tensorflow_in else keras.ops.convert_to_tensor(x.numpy())

    def get_config(self) -> dict[str, Any]:
        return {**keras.layers.Layer.get_config(self), "preprocessing": _preprocessing_dict(self.preprocessing)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class RepVGGImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
    backbone_cls = RepVGGBackbone
    image_converter_cls = RepVGGImageConverter


@keras.saving.register_keras_serializable(package=PACKAGE)
class RepVGGImageClassifier(keras_hub.models.ImageClassifier):
    """KerasHub's `ImageClassifier` over a `RepVGGBackbone`, with timm's head names
    (`head.global_pool`, `head.fc`): the backbone, global pooling, dropout, a dense layer.

    labels: the class names, where known; dropped when `num_classes` differs (a new head,
    as `from_preset(..., num_classes=N)` makes, has classes of its own).
    """

    backbone_cls = RepVGGBackbone
    preprocessor_cls = RepVGGImageClassifierPreprocessor

    def __init__(self, backbone: RepVGGBackbone, num_classes: int, preprocessor=None, pooling: str = "avg",
                 activation=None, dropout: float = 0.0, head_dtype=None,
                 labels: Optional[Sequence[str]] = None, **kwargs: Any):
        head_dtype = head_dtype or backbone.dtype_policy
        pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}.get(pooling)
        if pool is None:
            raise KerasRepVGGError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.pooler = pool(dtype=head_dtype, name=names.HEAD_POOL)
        self.output_dropout = keras.layers.Dropout(dropout, dtype=head_dtype, name="head.drop")
        self.output_dense = keras.layers.Dense(num_classes, activation=activation, dtype=head_dtype,
                                               name=names.HEAD_FC)
        inputs = backbone.input
        outputs = self.output_dense(self.output_dropout(self.pooler(backbone(inputs))))
        # KerasHub's Task, not ImageClassifier's constructor: that one names the head its own way.
        keras_hub.models.Task.__init__(self, inputs=inputs, outputs=outputs, **kwargs)
        self.num_classes, self.activation, self.pooling, self.dropout = num_classes, activation, pooling, dropout
        self.labels = tuple(labels) if labels is not None and len(labels) == num_classes else None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "labels": list(self.labels) if self.labels is not None else None}

    def to_keras_model(self) -> keras.Model:
        return to_keras_model(self)


def describe(hub_model) -> ModelDescription:
    """What a RepVGGImageClassifier or RepVGGBackbone computes, as our models record it."""
    backbone = hub_model if isinstance(hub_model, RepVGGBackbone) else getattr(hub_model, "backbone", None)
    if not isinstance(backbone, RepVGGBackbone):
        raise KerasRepVGGError(f"{type(hub_model).__name__} is not a RepVGG KerasHub model "
                               "(RepVGGImageClassifier or RepVGGBackbone)")
    base = graph.describe(backbone)
    if isinstance(hub_model, RepVGGBackbone):
        return base
    if hub_model.pooling != "avg":
        raise KerasRepVGGError(f"a classifier with {hub_model.pooling!r} pooling has no RepVGG equivalent "
                               "(timm's head pools by average)")
    activation = keras.activations.serialize(keras.activations.get(hub_model.activation))
    activation = activation if isinstance(activation, str) else activation.get("config", activation)
    return base.replace(include_top=True, classes=int(hub_model.num_classes),
                        classifier_activation=None if activation == "linear" else activation,
                        labels=hub_model.labels)


def to_keras_model(hub_model) -> keras.Model:
    """Our Keras model with the same weights as a RepVGGImageClassifier or RepVGGBackbone
    (weights copied by layer name), recording its description: what exports and `predict` take."""
    description = describe(hub_model)
    model = graph.build(description, input_shape=tuple(hub_model.input_shape[1:]), initialize=False)
    source = {layer.name: layer for layer in _layers(hub_model)}
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(source[layer.name].get_weights())
    return model


def to_hub(model: keras.Model, preprocessor: bool = True):
    """A model of ours (deploy or training form) as KerasHub classes with the same weights: a
    RepVGGImageClassifier (logits; with our preprocessor unless `preprocessor=False`) for a
    classifier, a RepVGGBackbone for a model without its top."""
    description = graph.describe(model)
    if description.form not in FORMS:
        raise KerasRepVGGError(f"a {description.form!r} model has no KerasHub form; use the deploy or training form")
    if description.features_only or description.include_preprocessing or description.pooling:
        raise KerasRepVGGError(f"a model with head {description.head!r} and {description.input} input has no "
                               "KerasHub form; convert it with the default head and normalized input")
    backbone = RepVGGBackbone(description.variant, description.form, image_shape=tuple(model.input_shape[1:]),
                              preprocessing=description.preprocessing, source=description.source,
                              license=description.license)
    hub_model = backbone
    if description.include_top:
        hub_model = RepVGGImageClassifier(
            backbone, description.classes, activation=description.classifier_activation, labels=description.labels,
            preprocessor=RepVGGImageClassifierPreprocessor(RepVGGImageConverter(description.preprocessing))
            if preprocessor else None,
        )
    ours = {layer.name: layer for layer in _layers(model)}
    for layer in _layers(hub_model):
        if layer.weights:
            layer.set_weights(ours[layer.name].get_weights())
    return hub_model


def _layers(model) -> list:
    """Every layer with a name of ours, through nested models (a backbone in a task)."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _layers(layer)
        else:
            out.append(layer)
    return out


def load_preset(directory) -> keras.Model:
    """A KerasHub preset folder of ours, loaded by KerasHub (the classifier where the folder
    has one, else the backbone) and given back as our Keras model (`to_keras_model`)."""
    import json
    from pathlib import Path

    folder = Path(directory)
    try:
        registered = json.loads((folder / "config.json").read_text()).get("registered_name")
    except (OSError, ValueError) as err:
        raise KerasRepVGGError(f"{folder / 'config.json'}: not readable as KerasHub's config ({err})") from None
    expected = keras.saving.get_registered_name(RepVGGBackbone)
    if registered != expected:
        raise KerasRepVGGError(f"{folder / 'config.json'}: registered_name is {registered!r}, expected {expected!r} "
                               "(a KerasHub preset of another model)")
    if (folder / "task.json").is_file():
        return to_keras_model(keras_hub.models.ImageClassifier.from_preset(str(folder)))
    return to_keras_model(keras_hub.models.Backbone.from_preset(str(folder)))
