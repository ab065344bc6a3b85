"""timm's eval transform in numpy and Pillow: resize the shorter side, centre crop, normalize."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .configs import Preprocessing, get_variant
from .errors import KerasRepVGGError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
MAX_PIXELS = 100_000_000  # larger images are refused: decoding one takes gigabytes


class ImageError(KerasRepVGGError):
    """An image file that cannot be read: missing, corrupt, truncated, too large."""


def open_rgb(path: "str | os.PathLike[str]"):
    """A Pillow image in 8-bit RGB, from any mode: grayscale, palette, CMYK, 16-bit, RGBA."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(
                    f"{path}: {image.width}x{image.height} pixels, more than the {MAX_PIXELS:,} accepted"
                )
            image.load()  # decode now: a truncated or corrupt file fails here, not later
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit (or 32-bit integer) grayscale: Pillow's RGB conversion would clip at
                # 255; scale the 16-bit range down instead.
                pixels = np.asarray(image, dtype=np.float64)
                return Image.fromarray(np.clip(np.round(pixels / 257.0), 0, 255).astype(np.uint8)).convert("RGB")
            return image.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too large to decode safely ({err})") from None
    except (OSError, ValueError, SyntaxError) as err:  # Pillow's errors for unreadable files
        raise ImageError(f"{path}: cannot read the image ({err})") from None


def _preprocessing(arch_or_preprocessing: "str | Preprocessing") -> Preprocessing:
    if isinstance(arch_or_preprocessing, Preprocessing):
        return arch_or_preprocessing
    return get_variant(arch_or_preprocessing).preprocessing


def preprocess_input(x, arch: "str | Preprocessing" = "repvgg_a0") -> np.ndarray:
    """0-255 RGB (..., 3) -> what the models take: x / 255, minus mean, over std.

    Keras applications' convention: arrays already at the model's size. All RepVGG
    variants use ImageNet's mean and std; `arch` may be a variant name or a
    `Preprocessing`. For files, `load_images` also resizes and crops as timm does.
    """
    p = _preprocessing(arch)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1:] != (3,):
        raise KerasRepVGGError(f"expected RGB images with 3 channels last, got shape {x.shape}")
    return (x / 255.0 - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)


def load_image(
    path: "str | os.PathLike[str]", preprocessing: "str | Preprocessing", normalize: bool = True
) -> np.ndarray:
    """One image file through timm's eval transform: (size, size, 3) float32, normalized,
    or 0-255 RGB with normalize=False. `preprocessing` may be a variant name."""
    preprocessing = _preprocessing(preprocessing)
    from PIL import Image

    size = preprocessing.input_size
    with open_rgb(path) as image:
        # The shorter side becomes floor(size / crop_pct), as timm's transform does.
        scaled = math.floor(size / preprocessing.crop_pct)
        w, h = image.size
        if w <= h:
            new_size = (scaled, int(h * scaled / w))
        else:
            new_size = (int(w * scaled / h), scaled)
        methods = Image.Resampling
        resample = {"bilinear": methods.BILINEAR, "bicubic": methods.BICUBIC, "nearest": methods.NEAREST}
        image = image.resize(new_size, resample.get(preprocessing.interpolation, methods.BILINEAR))
        left = int(round((new_size[0] - size) / 2.0))
        top = int(round((new_size[1] - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image, dtype=np.float32)
    return preprocess_input(pixels, preprocessing) if normalize else pixels


def image_files(folder: "str | os.PathLike[str]") -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise KerasRepVGGError(f"{folder}: not a folder of images")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_images(
    paths: Sequence["str | os.PathLike[str]"], preprocessing: "str | Preprocessing", normalize: bool = True
) -> np.ndarray:
    """Image files as one (N, size, size, 3) batch, each through `load_image`."""
    return np.stack([load_image(p, preprocessing, normalize) for p in paths]).astype(np.float32)
