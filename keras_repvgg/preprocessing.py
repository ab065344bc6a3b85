"""timm's eval transform in numpy and Pillow: resize the shorter side, centre crop, normalize."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .configs import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def load_image(path: "str | os.PathLike[str]", preprocessing: Preprocessing, normalize: bool = True) -> np.ndarray:
    """One image as (size, size, 3) float32: normalized, or 0-255 RGB with normalize=False."""
    from PIL import Image

    size = preprocessing.input_size
    with Image.open(path) as image:
        image = image.convert("RGB")
        # The shorter side becomes floor(size / crop_pct), as timm's transform does.
        scaled = math.floor(size / preprocessing.crop_pct)
        w, h = image.size
        if w <= h:
            new_size = (scaled, int(h * scaled / w))
        else:
            new_size = (int(w * scaled / h), scaled)
        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
        image = image.resize(new_size, resample.get(preprocessing.interpolation, Image.BILINEAR))
        left = int(round((new_size[0] - size) / 2.0))
        top = int(round((new_size[1] - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image, dtype=np.float32)
    if not normalize:
        return pixels
    return (pixels / 255.0 - np.asarray(preprocessing.mean, np.float32)) / np.asarray(
        preprocessing.std, np.float32
    )


def image_files(folder: "str | os.PathLike[str]") -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of images")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_images(
    paths: Sequence["str | os.PathLike[str]"], preprocessing: Preprocessing, normalize: bool = True
) -> np.ndarray:
    return np.stack([load_image(p, preprocessing, normalize) for p in paths]).astype(np.float32)
