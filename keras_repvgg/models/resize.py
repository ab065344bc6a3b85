"""timm's eval resize and centre crop in TensorFlow ops, for graphs that take whole images:
the SavedModel's `predict_images` (after decoding) and KerasHub's image converter.

Pillow's path (`preprocessing.load_image`) is the other implementation; both take every
size, offset and filter from `core.transform`, and tests/test_transform.py holds them together.
"""

from __future__ import annotations

from keras_repvgg.core import transform
from keras_repvgg.core.configs import Preprocessing


def resize_and_crop(pixels, preprocessing: Preprocessing):
    """0-255 RGB pixels, (height, width, 3) or a batch of equal-size ones (n, height, width, 3),
    any dtype -> float32 pixels at (size, size): the shorter side to floor(size / crop_pct),
    the longer one scaled and truncated, then the centre crop."""
    import tensorflow as tf

    size = preprocessing.input_size
    image = tf.cast(pixels, tf.float32)
    shape = tf.shape(image, out_type=tf.int64)
    new_h, new_w = transform.resized_shape(shape[-3], shape[-2], preprocessing)
    top, left = transform.crop_offsets(new_h, new_w, size)
    method = transform.interpolation(preprocessing).tensorflow
    # As Pillow does: the width first, rounded (halves up) and clipped to 8 bits, then the height
    # (bicubic overshoots on sharp edges; Pillow clips that in between). antialias=True filters
    # like Pillow when shrinking; nearest ignores it, as Pillow's does.
    for height, width in ((shape[-3], new_w), (new_h, new_w)):
        image = tf.image.resize(image, tf.cast(tf.stack([height, width]), tf.int32), method, antialias=True)
        image = tf.clip_by_value(tf.floor(image + 0.5), 0.0, transform.PIXEL_MAX)
    top, left = tf.cast(top, tf.int32), tf.cast(left, tf.int32)
    cropped = tf.image.crop_to_bounding_box(image, top, left, size, size)
    return tf.ensure_shape(cropped, (*([None] if cropped.shape.rank == 4 else []), size, size, 3))
