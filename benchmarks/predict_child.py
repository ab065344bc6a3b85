"""One streamed `predict` run, or the model alone on preloaded arrays, in a fresh process,
so that its images/s and peak memory are its own.

    python -m benchmarks.predict_child predict MODEL LIST BATCH   # decode + model + JSON Lines
    python -m benchmarks.predict_child model MODEL LIST BATCH     # the model alone, as many images

The model alone runs one batch decoded beforehand as many times as the streamed run has
batches, so that both runs last about as long: a shared machine's speed drifts by 10% within
minutes, and a short run of the model alone (it was 10 batches, 9 s against 33 s) read that
drift as a gap between the two.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from benchmarks.common import peak_rss_bytes


def main(mode: str, model: str, listing: str, batch: str) -> None:

    from keras_repvgg.core.preprocessing import load_images
    from keras_repvgg.front.predict import classify_files, load_predictor
    from keras_repvgg.front.records import write_records

    batch_size = int(batch)
    predictor = load_predictor(model)
    with open(listing) as f:
        paths = f.read().split()
    if mode == "predict":
        with tempfile.TemporaryDirectory() as tmp, open(os.path.join(tmp, "out.jsonl"), "w") as out:
            start = time.perf_counter()
            count, failed = write_records(classify_files(predictor, [f"@{listing}"], batch_size=batch_size), out, "jsonl", 5)
            seconds = time.perf_counter() - start
        assert count == len(paths) and failed == 0, (count, failed)
    else:
        arrays = load_images(paths[:batch_size], predictor.preprocessing, normalize=False)
        predictor.probabilities(arrays)  # warm-up: graphs traced, kernels chosen
        batches = -(-len(paths) // batch_size)
        start = time.perf_counter()
        for _ in range(batches):
            predictor.probabilities(arrays)
        seconds = time.perf_counter() - start
        count = batches * batch_size
    print(json.dumps({"images": count, "seconds": seconds, "images_per_s": count / seconds,
                      "peak_rss": peak_rss_bytes()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
