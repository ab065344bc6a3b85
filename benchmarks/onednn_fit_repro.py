"""TensorFlow and Keras only (no keras-repvgg): `fit` of a RepVGG-A0-shaped training form
(per block: 3x3 conv + BatchNorm, 1x1 conv + BatchNorm, identity BatchNorm, added, ReLU) on
random 32x32 inputs, for the heap-corruption reports of TF 2.21 with oneDNN (docs/training.md).

    MALLOC_CHECK_=3 python benchmarks/onednn_fit_repro.py [--epochs 30] [--size 32] [--arrays]

MALLOC_CHECK_=3 makes glibc check every free, so a corrupted heap aborts at the first bad
free instead of some epochs later. Exit status 0 means every epoch ran.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def block(x, channels: int, stride: int, layers):
    identity = x.shape[-1] == channels and stride == 1
    dense = layers.ZeroPadding2D(1)(x) if stride == 2 else x
    dense = layers.Conv2D(channels, 3, strides=stride, padding="valid" if stride == 2 else "same", use_bias=False)(dense)
    branches = [layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(dense)]
    point = layers.MaxPooling2D(1, strides=stride)(x) if stride == 2 else x
    point = layers.Conv2D(channels, 1, use_bias=False)(point)
    branches.append(layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(point))
    if identity:
        branches.append(layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x))
    return layers.ReLU()(layers.Add()(branches))


def model(size: int, classes: int):
    import keras

    layers = keras.layers
    inputs = keras.Input((size, size, 3))
    x = block(inputs, 48, 2, layers)
    for depth, channels in zip((2, 4, 14, 1), (48, 96, 192, 1280), strict=True):
        for i in range(depth):
            x = block(x, channels, 2 if i == 0 else 1, layers)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes)(x))


def main() -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=1536)
    parser.add_argument("--arrays", action="store_true", help="fit on numpy arrays instead of a tf.data pipeline")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.images, args.size, args.size, 3)).astype(np.float32)
    y = rng.integers(0, 10, args.images)
    net = model(args.size, 10)
    net.compile(keras.optimizers.AdamW(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    data = (x, y) if args.arrays else (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(32),)
    began = time.monotonic()
    for epoch in range(args.epochs):
        if args.arrays:
            net.fit(*data, batch_size=32, epochs=1, verbose=0)
        else:
            net.fit(*data, epochs=1, verbose=0)
        print(f"epoch {epoch + 1} done at {time.monotonic() - began:.0f} s", flush=True)
    print("all epochs ran", tf.__version__, keras.__version__)


if __name__ == "__main__":
    main()
