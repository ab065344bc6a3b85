"""Labelled image files as a tf.data pipeline for `fit`: streamed from disk, decoded in
parallel, augmented (training) or through the eval transform (validation), normalized.

Files are read a batch ahead of the model, never all at once. An image that cannot be read
is left out of its batch and recorded in `Skipped`, so that one corrupt file in a folder of
thousands costs a line in the report, not the run.
"""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np

from keras_repvgg.core.augment import Augmentation, augmented_pixels
from keras_repvgg.core.configs import Preprocessing
from keras_repvgg.core.errors import ImageError
from keras_repvgg.core.folders import LabelledImages
from keras_repvgg.core.machine import usable_cores
from keras_repvgg.core.preprocessing import load_image
from keras_repvgg.core.transform import normalize

DECODE_THREADS = max(1, usable_cores() // 2)


class Skipped:
    """Unreadable images seen by the pipelines, each once, with its error (thread-safe:
    tf.data decodes on several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: dict[str, str] = {}

    def add(self, path: str, error: str) -> None:
        with self._lock:
            self._errors.setdefault(path, error)

    def errors(self) -> dict[str, str]:
        with self._lock:
            return dict(sorted(self._errors.items()))


def image_dataset(
    images: LabelledImages,
    preprocessing: Preprocessing,
    batch_size: int,
    skipped: Skipped,
    *,
    augmentation: Optional[Augmentation] = None,
    seed: int = 0,
):
    """(normalized images, one-hot labels) batches. With `augmentation`, the order is shuffled
    and each image cropped and flipped anew every epoch (both drawn from `seed`); without, the
    images are in order, through the eval transform."""
    import tensorflow as tf

    size, classes = preprocessing.input_size, len(images.classes)
    paths = np.asarray(images.paths, dtype=object)

    def read(index: np.ndarray, draw: np.ndarray) -> tuple[np.ndarray, np.bool_]:
        path = str(paths[int(index)])
        try:
            if augmentation is None:
                pixels = load_image(path, preprocessing, normalize=False)
            else:
                pixels = augmented_pixels(path, preprocessing, augmentation, np.random.default_rng(int(draw) & (2**64 - 1)))
        except ImageError as err:
            skipped.add(path, str(err))
            return np.zeros((size, size, 3), np.float32), np.bool_(False)
        return normalize(pixels, preprocessing), np.bool_(True)

    def load(index, draw, label):
        x, ok = tf.numpy_function(read, [index, draw], [tf.float32, tf.bool], stateful=False)
        x.set_shape((size, size, 3))
        ok.set_shape(())
        return x, tf.one_hot(label, classes), ok

    indices = tf.data.Dataset.range(len(images))
    if augmentation is not None:
        indices = indices.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        # One draw per image and epoch, from a stream that starts anew (from `seed`) each epoch.
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    else:
        draws = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()
    labels = tf.constant(np.asarray(images.labels, np.int64))
    dataset = tf.data.Dataset.zip(indices, draws).map(lambda i, d: (i, d, tf.gather(labels, i)))
    # A fixed, small pipeline, tf.data's autotuning off: on 2 cores its threads took the CPU
    # from the training step (A0 at 32 px: 140 images/s against 220-255 without it; timm's
    # own training, 268). Half the cores decode, two batches ahead.
    options = tf.data.Options()
    options.autotune.enabled = False
    return (
        dataset.map(load, num_parallel_calls=DECODE_THREADS)
        .filter(lambda x, y, ok: ok)
        .map(lambda x, y, ok: (x, y))
        .batch(batch_size)
        .prefetch(2)
        .with_options(options)
    )
