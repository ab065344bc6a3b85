"""One conversion in a fresh process, so its time and peak memory are its own."""

from __future__ import annotations

import json
import sys
import time

from benchmarks.common import current_rss_bytes, peak_rss_bytes, reset_peak_rss


def main(path: str) -> None:
    import keras_repvgg  # noqa: F401
    from keras_repvgg.converters import convert_checkpoint

    _ = keras_repvgg.keras  # import TensorFlow and Keras before the baseline
    reset_peak_rss()
    baseline = current_rss_bytes()
    start = time.perf_counter()
    result = convert_checkpoint(path)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "seconds": seconds,
        "baseline_rss": baseline,
        "peak_rss": peak_rss_bytes(),
        "params": result.model.count_params(),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
