"""Training augmentation in Pillow: a random resized crop and a horizontal flip, as timm's
training transform (`RandomResizedCrop`, `RandomHorizontalFlip`), drawn from a numpy
generator so that a seed gives the same crops.

Evaluation never comes here: validation and `evaluate` use the eval transform
(`preprocessing.load_image`), the pixels an app sees.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from keras_repvgg.core import transform
from keras_repvgg.core.configs import Preprocessing
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.core.preprocessing import open_rgb


@dataclass(frozen=True)
class Augmentation:
    """What a training image goes through: a crop covering `scale` of the image's area with
    aspect ratio in `ratio`, resized to the input size, then flipped with probability `flip`."""

    scale: tuple[float, float] = (0.08, 1.0)  # timm's default
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise KerasRepVGGError(f"crop scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise KerasRepVGGError(f"crop ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0 <= self.flip <= 1:
            raise KerasRepVGGError(f"flip probability must be in [0, 1], got {self.flip}")


NO_AUGMENTATION = Augmentation(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0)


def crop_box(width: int, height: int, augmentation: Augmentation, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height): up to ten draws of area and log-uniform aspect
    ratio; if none fits, the largest centre crop whose ratio is in range (torchvision's rule)."""
    area = width * height
    log_ratio = (math.log(augmentation.ratio[0]), math.log(augmentation.ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*augmentation.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    aspect = width / height
    if aspect < augmentation.ratio[0]:
        w, h = width, int(round(width / augmentation.ratio[0]))
    elif aspect > augmentation.ratio[1]:
        w, h = int(round(height * augmentation.ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def augmented_pixels(
    path: "str | os.PathLike[str]", preprocessing: Preprocessing, augmentation: Augmentation,
    rng: np.random.Generator, name: Optional[str] = None,
) -> np.ndarray:
    """One training image: (size, size, 3) uint8 RGB, cropped, resized with the checkpoint's
    filter, maybe flipped. Unreadable files raise `ImageError` naming the file."""
    from PIL import Image

    size = preprocessing.input_size
    method = getattr(Image.Resampling, transform.interpolation(preprocessing).pillow)
    with open_rgb(path, name) as image:
        left, top, w, h = crop_box(image.width, image.height, augmentation, rng)
        image = image.resize((size, size), method, box=(left, top, left + w, top + h))
        if rng.uniform() < augmentation.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(image, dtype=np.uint8)
