"""Classify image files with any kind of model: .keras, .tflite, a SavedModel, or a checkpoint.

Every kind gets the same pixels (timm's eval transform in Pillow, `load_image`),
so that the kinds differ only in how they compute, not in what they see. Files stream
through in batches: threads decode the next batches while the model runs this one, so
that memory holds a few batches whatever the number of images.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Optional, Union

import numpy as np

from keras_repvgg.core.configs import Preprocessing
from keras_repvgg.core.description import LABELS_FILE, METADATA_FILE, ModelDescription, from_export_metadata
from keras_repvgg.core.errors import ImageError, KerasRepVGGError
from keras_repvgg.core.labels import class_names
from keras_repvgg.core.machine import usable_cores
from keras_repvgg.core.preprocessing import load_image, preprocess_input
from keras_repvgg.core.transform import softmax
from keras_repvgg.front.inputs import Unmatched, image_paths

SAVEDMODEL_METADATA = f"assets.extra/{METADATA_FILE}"
SAVEDMODEL_LABELS = f"assets.extra/{LABELS_FILE}"


@dataclass
class Predictor:
    """A loaded model: 0-255 RGB batch at its size -> class probabilities."""

    kind: str
    preprocessing: Preprocessing  # input_size is the model's
    labels: list[str]
    probabilities: Callable[[np.ndarray], np.ndarray]
    # What was assumed because the file does not say (a .tflite or SavedModel made elsewhere),
    # one sentence each; the command line prints them.
    assumptions: tuple[str, ...] = ()


def _as_probabilities(head: str, what: str) -> Callable[[np.ndarray], np.ndarray]:
    """What turns the model's output into probabilities: softmax for logits, nothing for
    probabilities; any other head is not a classifier's."""
    if head == "logits":
        return softmax
    if head == "probabilities":
        return lambda out: out
    raise KerasRepVGGError(f"{what}: predict needs a classifier, and this model outputs {head.replace('_', ' ')}")


def _keras_predictor(model, kind: str, description: Optional[ModelDescription] = None) -> Predictor:
    from keras_repvgg.models.model import describe

    description = description or describe(model)
    finish = _as_probabilities(description.head, model.name)
    p = description.preprocessing

    def run(pixels: np.ndarray) -> np.ndarray:
        x = pixels if description.takes_pixels else preprocess_input(pixels, p)
        return finish(np.asarray(model.predict_on_batch(x)))  # the batch as the caller made it

    return Predictor(kind, p, class_names(description.classes, description.labels), run)


def _tflite_file(path: Path, data: bytes) -> Predictor:
    from keras_repvgg.tflite import TFLiteRunner, read_labels, read_metadata

    runner = TFLiteRunner(data)
    meta = read_metadata(data)
    size = int(runner.input["shape"][1])
    assumptions: list[str] = []
    if meta is not None:  # ours: the file says what it takes and gives
        description = from_export_metadata(meta)
        p, takes_pixels, head = description.preprocessing, description.takes_pixels, description.head
    else:  # made elsewhere: say what is assumed
        p = Preprocessing(input_size=size)
        # uint8 input without quantization parameters can only be raw pixels.
        takes_pixels = runner.input["dtype"] == np.uint8 and not runner.input["quantization"][0]
        # A final SOFTMAX is a fact of the graph; anything else is taken for logits.
        head = "probabilities" if runner.ends_in_softmax else "logits"
        assumptions.append(
            f"{path} has no keras-repvgg description: assuming it takes "
            + ("0-255 RGB pixels" if takes_pixels else "RGB normalized with ImageNet's mean and std")
            + f" at {size} px after timm's default eval transform (crop {p.crop_pct}, {p.interpolation}), and that "
            + ("its output is probabilities (it ends in a softmax)" if head == "probabilities"
               else "its output is logits (it ends in no softmax): a softmax is applied")
        )
    finish = _as_probabilities(head, str(path))
    classes = int(runner.output["shape"][-1])
    labels = read_labels(data)
    if labels is None and meta is None:
        assumptions.append(f"{path} names no classes: they are shown as their indices")

    def run(pixels: np.ndarray) -> np.ndarray:
        return finish(runner(pixels if takes_pixels else preprocess_input(pixels, p)))

    return Predictor("tflite", p, class_names(classes, labels), run, tuple(assumptions))


def _savedmodel(path: Path, loaded) -> Predictor:
    import tensorflow as tf

    serve = loaded.signatures["serving_default"]
    size = int(serve.structured_input_signature[1]["images"].shape[1])
    meta_file = path / SAVEDMODEL_METADATA
    assumptions: tuple[str, ...] = ()
    if meta_file.is_file():
        p = from_export_metadata(json.loads(meta_file.read_text())).preprocessing
    else:
        p = Preprocessing(input_size=size)
        assumptions = (f"{path} has no keras-repvgg description: assuming timm's default eval transform "
                       f"at {size} px (crop {p.crop_pct}, {p.interpolation})",)
    if "probabilities" not in serve.structured_outputs:
        raise KerasRepVGGError(f"{path}: predict needs a classifier, and this SavedModel has no probabilities")
    labels_file = path / SAVEDMODEL_LABELS
    labels = labels_file.read_text().splitlines() if labels_file.is_file() else None
    classes = int(serve.structured_outputs["probabilities"].shape[-1])

    def run(pixels: np.ndarray) -> np.ndarray:  # serving_default takes 0-255 pixels
        return serve(images=tf.constant(pixels, tf.float32))["probabilities"].numpy()

    return Predictor("savedmodel", p, class_names(classes, labels), run, assumptions)


def load_predictor(
    model: "str | os.PathLike[str]", arch: Optional[str] = None, input_size: Optional[int] = None
) -> Predictor:
    """MODEL: a .keras file, a .tflite file, a SavedModel folder, or any checkpoint SOURCE."""
    from keras_repvgg.core.artifacts import ArtifactKind
    from keras_repvgg.front.loading import PREDICTABLE, load_artifact

    artifact = load_artifact(model, PREDICTABLE, arch, input_size=input_size)
    if artifact.kind is ArtifactKind.TFLITE:
        return _tflite_file(artifact.path, artifact.model)
    if artifact.kind is ArtifactKind.SAVEDMODEL:
        return _savedmodel(artifact.path, artifact.model)
    return _keras_predictor(artifact.model, "keras" if artifact.kind is ArtifactKind.KERAS else "source")


PREFETCH = 2  # batches decoded ahead of the model


def decode(
    source: "str | os.PathLike[str] | BinaryIO", predictor: Predictor, name: Optional[str] = None
) -> Union[np.ndarray, str]:
    """0-255 RGB pixels at the model's size (timm's eval transform), or the error message
    naming the file. A path, or a binary file object with the `name` to call it."""
    try:
        return load_image(source, predictor.preprocessing, normalize=False, name=name)
    except ImageError as err:
        return str(err)


def records(predictor: Predictor, names: list[str], decoded: list[Union[np.ndarray, str]], top: int) -> list[dict]:
    """One record per image, in order: its top classes, or its decoding error."""
    good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
    probabilities = predictor.probabilities(np.stack([decoded[i] for i in good])) if good else np.zeros((0, 0))
    rows = dict(zip(good, probabilities, strict=True))
    out: list[dict] = []
    for i, name in enumerate(names):
        if i not in rows:
            out.append({"image": name, "error": decoded[i]})
            continue
        row = rows[i]
        order = np.argsort(-row, kind="stable")[:top]
        out.append({
            "image": name,
            "top": [{"index": int(k), "label": predictor.labels[k], "probability": float(row[k])} for k in order],
        })
    return out


def classify_files(
    predictor: Predictor, inputs: Iterable["str | os.PathLike[str]"], top: int = 5, batch_size: int = 32,
    threads: Optional[int] = None,
) -> Iterator[dict]:
    """Records (see `records`) for every image the inputs name (files, folders, glob patterns,
    @lists: `keras_repvgg.front.inputs.image_paths`), in order, as they are classified.

    `threads` decode in parallel with the model, at most PREFETCH batches ahead, so that
    memory holds PREFETCH + 1 batches whatever the number of images. An unreadable image,
    or an input naming none, is a record with its error, and the run goes on.
    """
    if batch_size < 1:
        raise KerasRepVGGError(f"the batch size must be at least 1, got {batch_size}")

    def decoded(item: "str | Unmatched") -> Union[np.ndarray, str]:
        return item.error if isinstance(item, Unmatched) else decode(item, predictor)

    items = image_paths(inputs)
    pending: deque[tuple[list[str], list[Future]]] = deque()
    with ThreadPoolExecutor(threads or usable_cores(), thread_name_prefix="decode") as pool:
        while batch := list(itertools.islice(items, batch_size)):
            names = [item.name if isinstance(item, Unmatched) else item for item in batch]
            pending.append((names, [pool.submit(decoded, item) for item in batch]))
            if len(pending) > PREFETCH:
                names, futures = pending.popleft()
                yield from records(predictor, names, [f.result() for f in futures], top)
        while pending:
            names, futures = pending.popleft()
            yield from records(predictor, names, [f.result() for f in futures], top)


def predict_files(predictor: Predictor, images: Iterable["str | os.PathLike[str]"], top: int = 5) -> list[dict]:
    """All records of `classify_files` as one list: [{"image": PATH, "top": [{"index", "label",
    "probability"}, ...]} or {"image": PATH, "error": MESSAGE}, ...], in the order given."""
    return list(classify_files(predictor, images, top=top))
