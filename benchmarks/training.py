"""Training: `train`'s speed against timm's PyTorch training of the same model on the same
files and CPU, and the accuracy it reaches on digits over seeds, with the int8 points lost
as `evaluate` measures them.

    python -m benchmarks --sections training_speed training_accuracy
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.digits import write_digit_folders


def _keras_epochs(data: Path, size: int, epochs: int, seed: int) -> tuple[list[float], int]:
    """Seconds of each epoch's training (validation excluded) of `train` from a random A0."""
    from keras_repvgg.core.augment import Augmentation
    from keras_repvgg.front.train import TrainOptions, train
    from keras_repvgg.models.backend import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.began: float | None = None
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_test_begin(self, logs=None):  # validation starts: the epoch's training is over
            if self.began is not None:
                self.seconds.append(time.perf_counter() - self.began)
                self.began = None

    timer = Timer()
    options = TrainOptions(epochs=epochs, input_size=size, seed=seed, validation_split=0.1,
                           augmentation=Augmentation(flip=0.0))
    with tempfile.TemporaryDirectory() as out:
        result = train(data, None, arch="repvgg_a0", options=options, verbose=0, callbacks=[timer],
                       backup_dir=Path(out) / "backup")
    return timer.seconds, result.train_images


def _timm_epochs(data: Path, size: int, epochs: int, seed: int) -> tuple[list[float], int]:
    """The same for timm's A0 trained in PyTorch as timm's train.py does it: torchvision's
    RandomResizedCrop from the same files (the same split), AdamW, label smoothing, a
    DataLoader with a worker per core."""
    import os

    import timm
    import torch
    from PIL import Image
    from torchvision import transforms

    from keras_repvgg.core.folders import read_folder, split

    images, _ = split(read_folder(data), 0.1, seed)
    transform = transforms.Compose([
        transforms.RandomResizedCrop(size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i):
            with Image.open(images.paths[i]) as image:
                return transform(image.convert("RGB")), images.labels[i]

    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(Files(), batch_size=32, shuffle=True, num_workers=os.cpu_count() or 1,
                                         persistent_workers=True)
    model = timm.create_model("repvgg_a0", num_classes=len(images.classes)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    seconds = []
    for _ in range(epochs):
        began = time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad()
            loss(model(x), y).backward()
            optimizer.step()
        seconds.append(time.perf_counter() - began)
    return seconds, len(images)


def speed(sizes: tuple[int, ...] = (32, 224), rounds: int = 3, epochs: int = 3) -> list[dict[str, Any]]:
    """Training images/s (the median over rounds of each run's epochs after the first, which
    traces and warms up), `train` and timm interleaved round by round."""
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for size in sizes:
            data = Path(root) / f"digits-{size}"
            write_digit_folders(data, classes=range(10), per_class=150 if size <= 64 else 30, size=size)
            rates: dict[str, list[float]] = {"keras": [], "timm": []}
            for round_ in range(rounds):
                for name, run in (("keras", _keras_epochs), ("timm", _timm_epochs)):
                    seconds, count = run(data, size, epochs, seed=round_)
                    rates[name].extend(count / s for s in seconds[1:])
                    print(f"{size} px round {round_} {name}: {[round(count / s, 1) for s in seconds]} images/s",
                          flush=True)
            keras_rate, timm_rate = statistics.median(rates["keras"]), statistics.median(rates["timm"])
            rows.append({"input": f"{size} px", "images": count, "keras_train_images_per_s": round(keras_rate, 1),
                         "timm_train_images_per_s": round(timm_rate, 1), "ratio": round(keras_rate / timm_rate, 3)})
    return rows


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.4f} [{min(values):.4f}, {max(values):.4f}]"


def accuracy(seeds: int = 5, **overrides: Any) -> dict[str, Any]:
    """`train` on digits 0-3 (40 a class; 50 a class held out) from timm's A0 pretrained on
    digits 4-9, with the defaults (flips off: digits are not mirror-symmetric; `overrides`
    replace other options), then int8 from the training form with the training folder as
    calibration: top-1 of each on the held-out folder, by `evaluate`, over `seeds` seeds."""
    from safetensors.torch import save_file

    from benchmarks.digits import digits_backbone
    from keras_repvgg.core.augment import Augmentation
    from keras_repvgg.front.evaluate import evaluate
    from keras_repvgg.front.phone import ExportOptions, export_for_phone
    from keras_repvgg.front.train import TrainOptions, train

    runs = []
    with tempfile.TemporaryDirectory() as root_name:
        root = Path(root_name)
        write_digit_folders(root / "data", per_class=40)
        write_digit_folders(root / "val", per_class=50, offset=40)
        for seed in range(seeds):
            weights = root / f"backbone-{seed}.safetensors"
            save_file({k: v.contiguous() for k, v in digits_backbone(seed).state_dict().items()}, str(weights))
            options = TrainOptions(input_size=32, seed=seed, **{"augmentation": Augmentation(flip=0.0), **overrides})
            began = time.perf_counter()
            train(root / "data", root / "fused.keras", weights=weights, validation=root / "val", options=options,
                  save_train_form=root / "train.keras", verbose=0)
            seconds = time.perf_counter() - began
            export_for_phone(root / "train.keras", root / "int8.tflite", ExportOptions("int8"),
                             calibration=root / "data")
            result = evaluate([root / "fused.keras", root / "int8.tflite"], root / "val")
            runs.append({"float": result.scores[0].top1, "int8": result.scores[1].top1, "seconds": seconds})
            print(f"seed {seed}: {runs[-1]}", flush=True)
    return {
        "options": {k: str(v) for k, v in overrides.items()} or "defaults",
        "float_top1": _spread([r["float"] for r in runs]),
        "int8_top1": _spread([r["int8"] for r in runs]),
        "int8_points_lost": _spread([100 * (r["float"] - r["int8"]) for r in runs]),
        "train_seconds": _spread([r["seconds"] for r in runs]),
    }
