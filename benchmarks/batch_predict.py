"""Streamed `predict` over many images: images/s against the model alone on preloaded arrays,
and peak memory at 1,000 and 10,000 images (it should not grow with the number of images).

The images are crops and scales of scikit-learn's two photographs (JPEG, 120-500 px a side),
written to a temporary folder. Each run is a fresh process (`benchmarks.predict_child`);
the runs of one model kind are interleaved, and the images/s are medians.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import run_child


def write_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """count JPEGs cut from the two photographs at random places and scales."""
    import numpy as np
    import sklearn
    from PIL import Image

    sources = sorted((Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg"))
    photos = [Image.open(p).convert("RGB") for p in sources]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side_w, side_h = int(rng.integers(120, 420)), int(rng.integers(120, 420))
        x, y = int(rng.integers(0, photo.width - side_w)), int(rng.integers(0, photo.height - side_h))
        scale = float(rng.uniform(0.6, 1.2))
        image = photo.crop((x, y, x + side_w, y + side_h)).resize((int(side_w * scale), int(side_h * scale)))
        path = folder / f"{i // 1000:02d}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        paths.append(path)
    return paths


def _models(folder: Path, size: int) -> dict[str, Path]:
    from keras_repvgg import create_model
    from keras_repvgg.exports.serving import export_saved_model
    from keras_repvgg.tflite import export_tflite, write_tflite

    model = create_model("repvgg_a0", input_shape=(size, size, 3))  # random weights, softmax head
    tflite = write_tflite(export_tflite(model, "float32"), folder / "a0.tflite")
    return {"tflite": Path(tflite), "savedmodel": Path(export_saved_model(model, folder / "serving"))}


def run(counts: dict[str, tuple[int, ...]], repeats: int = 3, batch: int = 32, size: int = 224) -> list[dict[str, Any]]:
    """counts: per model kind, the numbers of images; the first is timed `repeats` times,
    interleaved with the model alone on one preloaded batch, run as many times as the
    streamed run has batches."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_photos(root / "images", max(max(c) for c in counts.values()))
        models = _models(root, size)
        for kind, sizes in counts.items():
            lists = {}
            for n in sizes:
                lists[n] = root / f"{kind}_{n}.txt"
                lists[n].write_text("\n".join(map(str, paths[:n])) + "\n")
            small = sizes[0]
            args = lambda mode, n: (mode, str(models[kind]), str(lists[n]), str(batch))
            streamed, alone, rss = [], [], {}
            for _ in range(repeats):
                streamed.append(run_child("benchmarks.predict_child", *args("predict", small)))
                alone.append(run_child("benchmarks.predict_child", *args("model", small)))
            rss[small] = statistics.median(r["peak_rss"] for r in streamed)
            big = {n: run_child("benchmarks.predict_child", *args("predict", n)) for n in sizes[1:]}
            rss.update({n: r["peak_rss"] for n, r in big.items()})
            predict_rate = statistics.median(r["images_per_s"] for r in streamed)
            model_rate = statistics.median(r["images_per_s"] for r in alone)
            largest = sizes[-1]
            rows.append({  # the same keys for every kind, whatever its numbers of images
                "model": f"A0 {size} px {kind}",
                "batch": batch,
                "predict_images_per_s": round(predict_rate, 1),
                "model_alone_images_per_s": round(model_rate, 1),
                "predict_over_model": round(predict_rate / model_rate, 3),
                "images": " / ".join(str(n) for n in sizes),
                "images_per_s_at_largest": round(big[largest]["images_per_s"] if largest in big else predict_rate, 1),
                "peak_rss_mib": " / ".join(str(round(rss[n] / 2**20)) for n in sizes),
                "rss_largest_over_smallest": round(rss[largest] / rss[small], 3),
            })
            print(rows[-1], flush=True)
    return rows
