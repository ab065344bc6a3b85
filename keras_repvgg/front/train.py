"""Teach a RepVGG your own classes: a folder of labelled photos in, a fused `.keras` model out.

    result = train("photos/", "model.keras", weights="timm/repvgg_a0.rvgg_in1k")

The training form learns (three branches a block); the output is its fusion, one 3x3
convolution a block, with the folder's class names as its labels. With `weights`, the
backbone starts pretrained under a new head; `warmup_epochs` (none by default) train the head
alone over the frozen backbone first, then `epochs` train the whole network. Each finished
epoch is backed up beside the output, so that a killed run started again resumes.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from keras_repvgg.core.atomic import atomic_path
from keras_repvgg.core.augment import Augmentation
from keras_repvgg.core.configs import get_variant
from keras_repvgg.core.description import ModelDescription
from keras_repvgg.core.errors import DatasetError, KerasRepVGGError
from keras_repvgg.core.folders import LabelledImages, read_folder, split
from keras_repvgg.core.names import HEAD_FC


@dataclass(frozen=True)
class TrainOptions:
    """How to train. The defaults were measured on scikit-learn's digits (docs/training.md)."""

    epochs: int = 10  # the whole network
    warmup_epochs: int = 0  # epochs of the new head alone over the frozen backbone first (with `weights`)
    # Peaks of the cosine schedules (AdamW): the new head alone, the whole network from
    # pretrained weights, and the whole network from a random start.
    head_learning_rate: float = 1e-2
    fine_tune_learning_rate: float = 5e-4
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    batch_size: int = 32
    validation_split: float = 0.2  # where no validation folder is given
    seed: int = 0
    input_size: Optional[int] = None  # default: the checkpoint's (or the variant's)
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise KerasRepVGGError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0:
            raise KerasRepVGGError(f"warmup_epochs must be 0 or more, got {self.warmup_epochs}")


@dataclass
class TrainResult:
    model: Any  # the fused (deploy-form) keras.Model, labelled with the classes
    train_form: Any  # the trained training form (what int8's best graphs start from)
    classes: tuple[str, ...]
    train_images: int
    validation_images: int
    validation_accuracy: float  # top-1 of the fused model on the validation images
    history: dict[str, list[float]]
    skipped: dict[str, str]  # unreadable images and why, left out
    resumed: bool


def _images(data, validation, options: TrainOptions) -> tuple[LabelledImages, LabelledImages]:
    everything = read_folder(data)
    if validation is not None:
        return everything, read_folder(validation, everything.classes)
    return split(everything, options.validation_split, options.seed)


def _description(weights, arch: Optional[str], classes: tuple[str, ...], input_size: Optional[int]):
    """The training form to build, and the pretrained backbone whose weights it starts from."""
    if weights is not None:
        from keras_repvgg.converters import convert_checkpoint
        from keras_repvgg.models.model import describe

        backbone = convert_checkpoint(weights, arch, form="train", include_top=False, pooling="avg",
                                      input_size=input_size).model
        start = describe(backbone)
    else:
        if arch is None:
            raise KerasRepVGGError("give the starting weights (any SOURCE convert takes) or, "
                                   "for a random start, the variant (arch)")
        variant = get_variant(arch)
        backbone, start = None, ModelDescription(variant.name, form="train", preprocessing=variant.preprocessing)
        start = start.resolved(input_size)
    description = start.replace(include_top=True, pooling=None, classes=len(classes), classifier_activation=None,
                                labels=classes)
    return description.resolved(input_size or start.preprocessing.input_size), backbone


def _model(description: ModelDescription, backbone, seed: int):
    from keras_repvgg.models.backend import keras
    from keras_repvgg.models.model import build

    keras.utils.set_random_seed(seed)  # the new head's (or a random start's) initial weights
    model = build(description)
    if backbone is not None:
        for layer in backbone.layers:
            if layer.weights and layer.name != HEAD_FC:
                model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


def _compile(model, learning_rate: float, steps: int, options: TrainOptions) -> None:
    from keras_repvgg.models.backend import keras

    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=options.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=options.label_smoothing),
        # A metric object, not "accuracy": its variables exist before fit traces (see below).
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    # The optimizer's slots made now, not on fit's first step: variables created while
    # tracing make TensorFlow trace the train step twice (A0 at 32 px, 2 + 10 epochs: the
    # whole run took 54 s with the second trace, 40 s without).
    model.optimizer.build(model.trainable_variables)


def _phase(model, name: str, epochs: int, learning_rate: float, train_ds, val_ds, steps: int,
           backup: Path, options: TrainOptions, verbose, callbacks: Sequence[Any]) -> tuple[dict[str, list[float]], bool]:
    """One `fit`, backed up each epoch in `backup/name`; a finished phase leaves its weights in
    `backup/name.weights.h5`, so that a restarted run skips it. (history, resumed)."""
    from keras_repvgg.models.backend import keras

    done = backup / f"{name}.weights.h5"
    if done.is_file():
        model.load_weights(str(done))
        return {}, True
    state = backup / name
    resumed = state.is_dir() and any(state.iterdir())
    _compile(model, learning_rate, epochs * steps, options)
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, shuffle=False,  # tf.data shuffles
                        callbacks=[keras.callbacks.BackupAndRestore(str(state)), *callbacks])
    with atomic_path(done) as tmp:
        model.save_weights(str(tmp))
    return {k: [float(v) for v in values] for k, values in history.history.items()}, resumed


def _accuracy(model, dataset) -> float:
    """Top-1 over a dataset of (images, one-hot labels)."""
    import numpy as np

    correct = total = 0
    for x, y in dataset:
        predicted = np.asarray(model.predict_on_batch(x)).argmax(-1)
        correct += int((predicted == np.asarray(y).argmax(-1)).sum())
        total += len(predicted)
    return correct / max(total, 1)


def _set_backbone_trainable(model, trainable: bool) -> None:
    for layer in model.layers:
        if layer.name != HEAD_FC:
            layer.trainable = trainable  # a frozen BatchNorm also runs on its moving statistics


def train(
    data: "str | os.PathLike[str]",
    output: "str | os.PathLike[str] | None" = None,
    *,
    weights: "str | os.PathLike[str] | None" = None,
    arch: Optional[str] = None,
    validation: "str | os.PathLike[str] | None" = None,
    options: TrainOptions = TrainOptions(),
    save_train_form: "str | os.PathLike[str] | None" = None,
    backup_dir: "str | os.PathLike[str] | None" = None,
    verbose: "int | str" = "auto",
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train on `data` (one subfolder of images per class; the names are the labels) and
    write the fused model to `output` (a `.keras` file), and the training form to
    `save_train_form` where given.

    `weights`: a starting checkpoint (any SOURCE `convert` takes, in the training form) or
    None for a random start of `arch`. `validation`: a folder with the same class
    subfolders; without one, `options.validation_split` of each class is held out (drawn
    with `options.seed`). `backup_dir` (default: OUTPUT.backup) holds the state of an
    unfinished run and is removed when the outputs are written. `verbose`: Keras' `fit`
    verbosity ("auto": a progress bar on a terminal, a line an epoch otherwise).
    `callbacks`: Keras callbacks for every `fit` (TensorBoard, CSVLogger, timers).
    """
    train_images, val_images = _images(data, validation, options)  # a bad folder is said before TensorFlow loads
    from keras_repvgg.front.pipeline import Skipped, image_dataset
    from keras_repvgg.models.io import save_model
    from keras_repvgg.models.model import clone_with_weights
    from keras_repvgg.models.reparameterization import reparameterize

    description, backbone = _description(weights, arch, train_images.classes, options.input_size)
    model = _model(description, backbone, options.seed)
    p = description.preprocessing
    skipped = Skipped()
    train_ds = image_dataset(train_images, p, options.batch_size, skipped, augmentation=options.augmentation,
                             seed=options.seed)
    val_ds = image_dataset(val_images, p, options.batch_size, skipped)
    steps = -(-len(train_images) // options.batch_size)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    backup = Path(backup_dir) if backup_dir is not None else Path(f"{output or 'train'}.backup")
    backup.mkdir(parents=True, exist_ok=True)

    history: dict[str, list[float]] = {}
    resumed = False
    if backbone is not None and options.warmup_epochs:
        _set_backbone_trainable(model, False)
        history, resumed = _phase(model, "head", options.warmup_epochs, options.head_learning_rate, train_ds, val_ds,
                                  steps, backup, options, verbose, callbacks)
        _set_backbone_trainable(model, True)
    rate = options.fine_tune_learning_rate if backbone is not None else options.learning_rate
    whole, again = _phase(model, "whole", options.epochs, rate, train_ds, val_ds, steps, backup, options, verbose,
                          callbacks)
    for key, values in whole.items():
        history.setdefault(key, []).extend(values)

    unreadable = skipped.errors()
    if all(path in unreadable for path in val_images.paths):
        raise DatasetError(f"{validation or data}: none of the {len(val_images)} validation images could be read")
    fused = reparameterize(model)
    accuracy = _accuracy(fused, val_ds)
    trained = clone_with_weights(model)  # uncompiled: the file holds no optimizer state
    if save_train_form is not None:
        save_model(trained, save_train_form)
    if output is not None:
        save_model(fused, output)
    shutil.rmtree(backup, ignore_errors=True)
    read = [len([p for p in part.paths if p not in unreadable]) for part in (train_images, val_images)]
    return TrainResult(fused, trained, train_images.classes, read[0], read[1], accuracy,
                       history, unreadable, resumed or again)
