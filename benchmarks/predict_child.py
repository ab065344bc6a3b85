"""One streamed `predict` run, or the model alone on preloaded arrays, in a fresh process,
so that its images/s and peak memory are its own.

    python -m benchmarks.predict_child predict MODEL LIST BATCH   # decode + model + JSON Lines
    python -m benchmarks.predict_child model MODEL LIST BATCH     # the model on 10 batches in memory
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
    else:  # ten full batches of arrays decoded beforehand (a rate: more would only take longer)
        arrays = load_images(paths[:batch_size], predictor.preprocessing, normalize=False)
        predictor.probabilities(arrays)  # warm-up: graphs traced, kernels chosen
        start = time.perf_counter()
        for _ in range(10):
            predictor.probabilities(arrays)
        seconds = time.perf_counter() - start
        count = 10 * batch_size
    print(json.dumps({"images": count, "seconds": seconds, "images_per_s": count / seconds,
                      "peak_rss": peak_rss_bytes()}))


if __name__ == "__main__":
    main(*sys.argv[1:])
