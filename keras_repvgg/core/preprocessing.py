"""timm's eval transform in Pillow: resize the shorter side, centre crop, normalize (the sizes,
filters and constants are `transform`'s, which the TensorFlow implementation in `serving` shares)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # Pillow is imported when an image is opened
    from PIL import Image

from keras_repvgg.core import transform
from keras_repvgg.core.configs import Preprocessing, get_variant
from keras_repvgg.core.errors import ImageError, KerasRepVGGError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
MAX_PIXELS = 100_000_000  # larger images are refused: decoding one takes gigabytes
LONG_SIDE_LIMIT = 8  # beyond this aspect ratio, only the centre crop is resized (same pixels, bounded memory)


def open_rgb(path: "str | os.PathLike[str] | BinaryIO", name: Optional[str] = None) -> "Image.Image":
    """A Pillow image in 8-bit RGB, from any mode: grayscale, palette, CMYK, 16-bit, RGBA.

    `path` may be a binary file object (bytes read elsewhere, as Beam's workers do);
    `name` is what error messages call it (default: the path).
    """
    from PIL import Image, UnidentifiedImageError

    source, path = path, (name if name is not None else path)  # path: what messages name
    try:
        with Image.open(source) as image:
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
    except UnidentifiedImageError:  # its own message holds the file's repr: say it plainly
        raise ImageError(f"{path}: not an image file (no format Pillow reads)") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too large to decode safely ({err})") from None
    except (OSError, ValueError, SyntaxError) as err:  # Pillow's errors for unreadable files
        raise ImageError(f"{path}: cannot read the image ({err})") from None


def _preprocessing(arch_or_preprocessing: "str | Preprocessing") -> Preprocessing:
    if isinstance(arch_or_preprocessing, Preprocessing):
        return arch_or_preprocessing
    return get_variant(arch_or_preprocessing).preprocessing


def preprocess_input(x: "np.ndarray | Sequence[Any]", arch: "str | Preprocessing" = "repvgg_a0") -> np.ndarray:
    """0-255 RGB (..., 3) -> what the models take: x / 255, minus mean, over std.

    Keras applications' convention: arrays already at the model's size. All RepVGG
    variants use ImageNet's mean and std; `arch` may be a variant name or a
    `Preprocessing`. For files, `load_images` also resizes and crops as timm does.
    """
    p = _preprocessing(arch)
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1:] != (3,):
        raise KerasRepVGGError(f"expected RGB images with 3 channels last, got shape {x.shape}")
    return transform.normalize(x, p)


def load_image(
    path: "str | os.PathLike[str] | BinaryIO", preprocessing: "str | Preprocessing", normalize: bool = True,
    name: Optional[str] = None,
) -> np.ndarray:
    """One image file through timm's eval transform: (size, size, 3) float32, normalized,
    or 0-255 RGB with normalize=False. `preprocessing` may be a variant name. `path` may be
    a binary file object, with `name` naming it in errors."""
    preprocessing = _preprocessing(preprocessing)
    from PIL import Image

    size = preprocessing.input_size
    method = getattr(Image.Resampling, transform.interpolation(preprocessing).pillow)
    with open_rgb(path, name) as image:
        w, h = image.size
        new_h, new_w = transform.resized_shape(h, w, preprocessing)
        top, left = transform.crop_offsets(new_h, new_w, size)
        if max(new_w, new_h) <= LONG_SIDE_LIMIT * min(new_w, new_h):
            image = image.resize((new_w, new_h), method).crop((left, top, left + size, top + size))
        else:  # a strip (50,000 x 2 pixels would resize to 1.8M x 73): resize only what the crop keeps
            sx, sy = w / new_w, h / new_h
            image = image.resize((size, size), method, box=(left * sx, top * sy, (left + size) * sx, (top + size) * sy))
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
