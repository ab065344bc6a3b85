"""Shared test helpers: timm reference models and the checkpoints our converter reads.

Checkpoints are made here, never downloaded: timm's own model with random
weights and random but sane BatchNorm statistics, saved with safetensors.
torch and timm are imported here, before any test imports TensorFlow (the other
order crashes in triton's import); conftest imports this module first.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import timm
import torch
from safetensors.torch import save_file

torch.set_num_threads(2)

# timm publishes these eleven; the g2 variants exist only in the official repository.
TIMM_VARIANTS = [
    "repvgg_a0", "repvgg_a1", "repvgg_a2", "repvgg_b0", "repvgg_b1", "repvgg_b1g4",
    "repvgg_b2", "repvgg_b2g4", "repvgg_b3", "repvgg_b3g4", "repvgg_d2se",
]
G2_VARIANTS = ["repvgg_b1g2", "repvgg_b2g2", "repvgg_b3g2"]


def _g2_model(name: str):
    """The g2 variants built from timm's own RepVGG block config with groups=2."""
    from timm.models.byobnet import ByobNet, ByoModelCfg, _rep_vgg_bcfg

    widths = {"repvgg_b1g2": (2, 2, 2, 4), "repvgg_b2g2": (2.5, 2.5, 2.5, 5), "repvgg_b3g2": (3, 3, 3, 5)}
    cfg = ByoModelCfg(blocks=_rep_vgg_bcfg(wf=widths[name], groups=2), stem_type="rep", stem_chs=64)
    return ByobNet(cfg)


def make_timm_model(arch: str, seed: int = 0, num_classes: int = 1000):
    """timm's training-form model with random weights and randomized BatchNorm, in eval mode.

    BatchNorm weights stay in 0.3-0.8: near 1, the three summed branches would
    grow activations exponentially with depth.
    """
    torch.manual_seed(seed)
    if arch in G2_VARIANTS:
        model = _g2_model(arch)
    else:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.3)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
    # timm starts every bias at zero; random ones make the parity tests check where the
    # head's and squeeze-excitation's biases go (a generator of their own keeps the
    # BatchNorm statistics above what they were).
    biases = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=biases) * 0.2)
    return model.eval()


def sklearn_photos() -> list[Path]:
    """The two photographs scikit-learn ships (china.jpg, flower.jpg): real JPEGs to test on.

    Checked by name, so that a test looping over them can never loop over nothing."""
    import sklearn

    photos = sorted((Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg"))
    assert [p.name for p in photos] == ["china.jpg", "flower.jpg"], photos
    return photos


def reparameterized(model):
    return timm.utils.reparameterize_model(copy.deepcopy(model)).eval()


def torch_logits(model, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
    return out.numpy()


def save_checkpoint(model, path: Path) -> Path:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path


def save_official_checkpoint(model, path: Path) -> Path:
    """timm's state dict under the official RepVGG names, as a PyTorch pickle.

    The renaming is the documented correspondence between the two code bases,
    written out here independently of the converter's own mapping.
    """
    import re

    def official(key: str) -> str:
        key = re.sub(r"^stem\.", "stage0.", key)
        key = re.sub(r"^stages\.(\d)\.", lambda m: f"stage{int(m.group(1)) + 1}.", key)
        key = key.replace("head.fc.", "linear.")
        for timm_part, official_part in (
            ("conv_kxk", "rbr_dense"), ("conv_1x1", "rbr_1x1"), ("identity", "rbr_identity"),
            ("reparam_conv", "rbr_reparam"), ("attn.fc1", "se.down"), ("attn.fc2", "se.up"),
        ):
            key = key.replace(f".{timm_part}.", f".{official_part}.")
        return key

    torch.save({official(k): v for k, v in model.state_dict().items()}, str(path))
    return path


def keras_logits(model, x: np.ndarray) -> np.ndarray:
    out = model(x, training=False)
    # Keras' torch backend returns tensors that track gradients: numpy wants them detached.
    return np.asarray(out.detach().cpu() if hasattr(out, "detach") else out)


def randomize_keras_batchnorm(model, seed: int = 0) -> None:
    """Random but sane statistics in every BatchNormalization layer of a Keras model (as
    `make_timm_model` gives timm's), so that a freshly built training form stays finite."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.3, 0.8, n), rng.normal(0, 0.1, n),
                rng.normal(0, 0.1, n), rng.uniform(0.5, 2.0, n),
            ])


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Normalized NHWC float32 input, as timm's eval transform produces."""
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def assert_close_to_timm(ours: np.ndarray, reference: np.ndarray, rel: float = 1e-4) -> float:
    """max |ours - timm| <= rel * max |timm|; returns the relative error."""
    scale = float(np.abs(reference).max())
    err = float(np.abs(ours - reference).max()) / scale
    assert ours.shape == reference.shape
    assert err <= rel, f"max abs diff is {err:.2e} of the logit scale {scale:.3g}"
    return err


def photo_crops(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n crops and scales of scikit-learn's two photographs (JPEG, PNG, WebP; 40-300 px a side),
    in two nested folders, plus images in odd modes: CMYK, 16-bit grayscale, palette, grayscale,
    RGBA and a 3000 x 9 strip. Returns them all, sorted."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sklearn_photos()]
    paths = []
    for i in range(n):
        photo = photos[i % 2]
        w, h = int(rng.integers(40, 400)), int(rng.integers(40, 400))
        x, y = int(rng.integers(0, photo.width - w)), int(rng.integers(0, photo.height - h))
        crop = photo.crop((x, y, x + w, y + h))
        scale = float(rng.uniform(0.3, 1.5))
        crop = crop.resize((max(8, int(w * scale)), max(8, int(h * scale))))
        suffix = (".jpg", ".png", ".webp")[i % 3]
        path = folder / f"set{i % 2}" / f"crop{i:04d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path)
        paths.append(path)
    rgb = photos[0].resize((160, 120))
    odd = {
        "cmyk.jpg": rgb.convert("CMYK"), "palette.gif": rgb.convert("P"), "gray.png": rgb.convert("L"),
        "rgba.png": rgb.convert("RGBA"), "strip.png": photos[1].resize((3000, 9)),
        "gray16.png": Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257),
    }
    for name, image in odd.items():
        image.save(folder / name)
        paths.append(folder / name)
    return sorted(paths)


def unreadable_images(folder: Path) -> list[Path]:
    """Files named as images that no decoder reads: corrupt, truncated, empty, text, 120 megapixels."""
    from PIL import Image

    jpeg = folder / "whole.jpg"
    Image.open(sklearn_photos()[0]).save(jpeg)
    files = {
        "corrupt.jpg": b"\xff\xd8\xff\xe0 not really a JPEG" * 3, "truncated.jpg": jpeg.read_bytes()[:2000],
        "empty.png": b"", "text.png": b"plain text, not an image\n",
    }
    jpeg.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    Image.new("L", (12_000, 10_000)).save(folder / "huge.png", optimize=True)
    return sorted(folder / name for name in [*files, "huge.png"])
