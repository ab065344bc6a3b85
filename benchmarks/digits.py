"""A small real task for int8 accuracy: scikit-learn's digits, and timm's A0 trained on it.

Shared by the int8 tests and the benchmarks, so that both measure the same trained network.
"""

from __future__ import annotations

import numpy as np


def digits(size: int = 32):
    """(x_train, x_test, y_train, y_test): 8x8 digits upsampled to size x size RGB, in [-1, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.images.astype(np.float32) / 16.0
    x = np.kron(x, np.ones((size // 8, size // 8), np.float32))
    x = (np.repeat(x[..., None], 3, axis=-1) - 0.5) / 0.5
    return train_test_split(x, data.target, test_size=0.2, random_state=0, stratify=data.target)


def train_timm_a0(x: np.ndarray, y: np.ndarray, epochs: int = 10, seed: int = 0):
    """timm's repvgg_a0 trained on (x, y): `train_timm`."""
    return train_timm("repvgg_a0", x, y, epochs, seed)


def train_timm(arch: str, x: np.ndarray, y: np.ndarray, epochs: int = 10, seed: int = 0):
    """timm's `arch` (training form, 10 classes) trained with AdamW and one-cycle; eval mode.

    The same seed gives a different network on another CPU (float reductions differ), so
    whatever a test asserts about it must hold across seeds, not for one of them.
    """
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = (len(x) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * steps)
    inputs, labels = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y).long()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs))
        for i in range(0, len(inputs), 64):
            batch = order[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def digit_pixels(images: np.ndarray, size: int = 32) -> np.ndarray:
    """8x8 digits (0-16) as size x size 0-255 grayscale, each pixel a block (size a multiple of 8)."""
    return np.kron(images * (255 / 16), np.ones((size // 8, size // 8))).round().astype(np.uint8)


def write_digit_folders(root, classes=(0, 1, 2, 3), per_class: int = 40, offset: int = 0, size: int = 32) -> None:
    """`per_class` digits of each class, from the `offset`-th of that class on, as PNG files in
    one subfolder per class (named by the digit): a labelled folder as `train` reads one."""
    from pathlib import Path

    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    for digit in classes:
        folder = Path(root) / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(data.target == digit)[offset:offset + per_class]:
            Image.fromarray(digit_pixels(data.images[i], size)).save(folder / f"{i:04d}.png")


def digits_backbone(seed: int = 0, epochs: int = 6):
    """A pretrained backbone for training on digits 0-3: timm's A0 trained on digits 4-9 at
    32 px, its input normalized as keras-repvgg normalizes 0-255 pixels (ImageNet's mean and
    std), so that the classes it is then taught are ones it never saw."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = data.target >= 4
    pixels = digit_pixels(data.images[keep]).astype(np.float64)[..., None].repeat(3, axis=-1)
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    x = ((pixels - mean) / std).astype(np.float32)
    return train_timm_a0(x, data.target[keep], epochs=epochs, seed=seed)
