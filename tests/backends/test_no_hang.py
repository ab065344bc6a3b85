"""Training on Keras' torch backend does not hang in oneDNN's AVX2 kernels.

oneDNN's AVX2 kernel for the weight gradient of a 1x1 convolution with stride 2 on
channels-last input with 1, 3 or 4 channels (an RGB stem) spins forever (torch 2.14.1;
`ONEDNN_MAX_CPU_ISA=AVX2` selects those kernels on an AVX-512 machine too). The training
form therefore subsamples and then applies a stride-1 1x1 convolution; this proves that
the layout has no strided 1x1 convolution and that training steps on it return.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import keras_repvgg
from keras_repvgg.models.backend import BACKEND

STEPS = 100  # the strided kernel hung within 4 steps of A0 in 4 of 6 runs, and within 200 always

# The stem block (RGB in, stride 2) in the training form, as the builder lays it out, with a
# small head: what matters is its 1x1 branch's weight gradient at 32 px.
CHILD = r"""
import numpy as np
from keras_repvgg import keras
from keras_repvgg.core.configs import BlockSpec
from keras_repvgg.models.model import repvgg_block
keras.utils.set_random_seed(0)
image = keras.Input((32, 32, 3))
x = repvgg_block(image, BlockSpec("stem", 3, 48, 2, 1, 0), form="train")
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(image, keras.layers.Dense(5)(x))
model.compile(optimizer=keras.optimizers.SGD(0.01),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(1).standard_normal((8 * %d, 32, 32, 3)).astype(np.float32)
model.fit(x, np.arange(len(x)) %% 5, batch_size=8, epochs=1, verbose=0)
print("trained")
""" % STEPS


def test_the_training_form_has_no_strided_pointwise_convolution():
    model = keras_repvgg.create_model("repvgg_a0", form="train", input_shape=(32, 32, 3))
    pointwise = [layer for layer in model.layers if type(layer).__name__ in ("Conv2D", "GroupedConv2D")
                 and tuple(layer.kernel_size) == (1, 1)]
    assert pointwise and all(tuple(layer.strides) == (1, 1) for layer in pointwise)


@pytest.mark.skipif(BACKEND != "torch", reason="the kernel is torch's oneDNN")
def test_fit_on_torch_with_onednns_avx2_kernels_returns():
    env = {**os.environ, "KERAS_BACKEND": "torch", "ONEDNN_MAX_CPU_ISA": "AVX2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip().endswith("trained"), run.stderr[-3000:]
