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
    """timm's repvgg_a0 (training form, 10 classes) trained with AdamW and one-cycle; eval mode.

    The same seed gives a different network on another CPU (float reductions differ), so
    whatever a test asserts about it must hold across seeds, not for one of them.
    """
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("repvgg_a0", num_classes=10)
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
