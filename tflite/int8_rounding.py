"""Error-compensated int8 rounding of the fused 3x3 kernels (the `plain-compensated` graph).

Folding the identity (and the 1x1) into a block's 3x3 kernel puts a spike at each output
channel's centre tap. int8 gives each output channel 127 steps up to its largest weight, so
the spike coarsens the rounding of all the channel's other weights, and rounding each weight
to its nearest step lets those errors add up in the output. Rounding the weights one input
column at a time and spreading each column's rounding error over the columns not yet
rounded, in proportion to how the calibration inputs correlate (the second moments of the
conv's input patches, as in GPTQ, Frantar et al. 2022), keeps the conv's output on the
calibration inputs much closer to the float one, on the same int8 grid: the file keeps the
plain graph's ops and speed.

The kernels this writes are exact multiples of each output channel's int8 step, with the
largest at 127 steps, so TFLite's converter (symmetric per-channel int8, step = largest / 127)
finds the same steps and stores these integers unchanged.
"""

from __future__ import annotations

import numpy as np

INT8_STEPS = 127  # symmetric, narrow range: what TFLite's converter gives conv weights
MAX_ROWS = 8192  # input patches sampled per conv: several times the widest A/B conv's 9 x 192 columns
BATCH = 8  # images per forward pass while sampling (every conv's input is held at once)
DAMPING = 0.01  # of the mean diagonal, added to the moments: columns the data never excites
COLUMNS_PER_BLOCK = 128  # columns rounded before the rest are updated in one product
MAX_COLUMNS = 9 * 256  # columns compensated together (`column_chunks`)


def channel_steps(kernel: np.ndarray) -> np.ndarray:
    """Each output channel's int8 step for a (kh, kw, in, out) kernel (1 where all zero)."""
    step = np.abs(kernel).max(axis=(0, 1, 2)) / INT8_STEPS
    return np.where(step > 0, step, 1.0)


def compensated_columns(weights: np.ndarray, moments: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """(out, d) weights rounded to `steps` (one per row) column by column, each column's error
    pushed onto the later columns through the inverse of the inputs' (d, d) second moments."""
    w = weights.astype(np.float64).copy()
    h = moments.astype(np.float64)
    h = (h + h.T) / 2  # summed in float32: symmetric only to its rounding
    dead = np.diag(h) == 0  # inputs that are always zero: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices_from(h)] += DAMPING * np.mean(np.diag(h))
    # The upper Cholesky factor of the inverse (row i: how column i's error moves the rest),
    # without forming the inverse, whose own rounding can make it fail to factor: with the
    # order of the columns reversed (J), J h J = L L^T, and U = J L^-1 J has U^T U = h^-1.
    lower = np.linalg.cholesky(h[::-1, ::-1])
    u = np.linalg.inv(lower)[::-1, ::-1]
    s = steps.astype(np.float64)[:, None]
    out = np.empty_like(w)
    d = w.shape[1]
    for start in range(0, d, COLUMNS_PER_BLOCK):
        stop = min(start + COLUMNS_PER_BLOCK, d)
        errors = np.empty((w.shape[0], stop - start))
        for i in range(start, stop):
            q = np.clip(np.round(w[:, i:i + 1] / s), -INT8_STEPS, INT8_STEPS) * s
            out[:, i:i + 1] = q
            e = (w[:, i] - q[:, 0]) / u[i, i]
            w[:, i + 1:stop] -= np.outer(e, u[i, i + 1:stop])
            errors[:, i - start] = e
        w[:, stop:] -= errors @ u[start:stop, stop:]
    return out


def column_chunks(channels: int) -> list[np.ndarray]:
    """A group's kernel columns, (kh, kw, in) flattened, split by input channel into chunks
    of at most MAX_COLUMNS: each chunk is compensated on its own moments. Exact up to 256
    input channels (every A and B variant's identity blocks but B2's and B3's); above, the
    correlations between chunks are left out, which bounds the inverse's cost (cubic in the
    columns: 5,760 columns for D2se's 640 channels took seconds per layer)."""
    parts = np.array_split(np.arange(channels), -(-9 * channels // MAX_COLUMNS))
    return [(np.arange(9)[:, None] * channels + part[None, :]).ravel() for part in parts]


def compensated_kernel(kernel: np.ndarray, moments: list[list[np.ndarray]]) -> np.ndarray:
    """A (kh, kw, in/groups, out) kernel rounded on its int8 grid with error compensation;
    `moments[g][k]`: the second moments of group g's input patches over the columns of
    `column_chunks(in/groups)[k]`. Each channel's largest weight stays at 127 steps."""
    kh, kw, per_group, out = kernel.shape
    groups = len(moments)
    per_out = out // groups
    steps = channel_steps(kernel.astype(np.float64))
    flat = kernel.reshape(kh * kw * per_group, out).astype(np.float64)
    rounded = np.empty_like(flat)
    for g in range(groups):
        outs = slice(g * per_out, (g + 1) * per_out)
        for cols, chunk_moments in zip(column_chunks(per_group), moments[g], strict=True):
            rounded[cols, outs] = compensated_columns(flat[cols, outs].T, chunk_moments, steps[outs]).T
    # Compensation may move a channel's largest weight off 127 steps; TFLite would then pick
    # another step and round again. Put it back.
    largest = np.abs(flat).argmax(axis=0)
    channels = np.arange(out)
    rounded[largest, channels] = np.sign(flat[largest, channels]) * INT8_STEPS * steps
    return rounded.reshape(kernel.shape).astype(np.float32)


def patch_moments(patches: np.ndarray, groups: int) -> list[list[np.ndarray]]:
    """(rows, 9 * in) patches' second moments per group and column chunk (`compensated_kernel`)."""
    per_group = patches.reshape(len(patches), 9, groups, -1)
    out = []
    for g in range(groups):
        p = per_group[:, :, g, :].reshape(len(patches), -1)
        out.append([(p[:, cols].T @ p[:, cols]).astype(np.float64) for cols in column_chunks(per_group.shape[-1])])
    return out


def sampled_patches(x: np.ndarray, stride: int, pad: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """`rows` 3x3 input patches of a conv taken at random output positions, as (rows, 9 * c)
    in (kh, kw, c) order; `x` (n, h, w, c) is the conv's input before its own padding."""
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, c = x.shape
    oh, ow = (h - 3) // stride + 1, (w - 3) // stride + 1
    pick = rng.choice(n * oh * ow, size=min(rows, n * oh * ow), replace=False)
    img, pos = np.divmod(pick, oh * ow)
    top, left = np.divmod(pos, ow)
    dy, dx = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    patches = x[img[:, None, None], top[:, None, None] * stride + dy, left[:, None, None] * stride + dx]
    return patches.reshape(len(pick), 9 * c)


def round_kernels(model, calibration: np.ndarray, seed: int = 0) -> None:
    """Round every fused 3x3 conv (`reparam_conv`) of the deploy-form `model` in place, with
    error compensation measured on `calibration` (inputs as the model takes them)."""
    from keras_repvgg.core.layout import REPARAM_CONV, block_of
    from keras_repvgg.models.backend import keras  # Keras 3 or tf-keras, as the model was built

    convs = [layer for layer in model.layers if block_of(layer.name, REPARAM_CONV) is not None]
    inputs = keras.Model(model.inputs, [layer.input for layer in convs])
    rng = np.random.default_rng(seed)
    moments: list[list[list[np.ndarray]]] = [[] for _ in convs]
    per_image = -(-MAX_ROWS // len(calibration))
    for start in range(0, len(calibration), BATCH):
        batch = calibration[start:start + BATCH]
        features = inputs.predict_on_batch(batch)
        features = features if isinstance(features, (list, tuple)) else [features]
        for i, (layer, x) in enumerate(zip(convs, features, strict=True)):
            x = np.asarray(x, np.float32)  # products summed in float64 below
            pad = 1 if layer.padding == "same" else 0  # stride 2 pads before, in its own layer
            patches = sampled_patches(x, layer.strides[0], pad, per_image * len(batch), rng)
            batch_moments = patch_moments(patches, getattr(layer, "groups", 1))
            if moments[i]:
                for total, part in zip(moments[i], batch_moments, strict=True):
                    for k, m in enumerate(part):
                        total[k] += m
            else:
                moments[i] = batch_moments
    for layer, layer_moments in zip(convs, moments, strict=True):
        kernel, *rest = layer.get_weights()
        layer.set_weights([compensated_kernel(kernel, layer_moments), *rest])
