"""Apache Beam: the ready pipeline on the DirectRunner with two worker processes gives exactly
what `predict` gives for the same files, and sends the unreadable ones to the dead letters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_repvgg.front.cli import main
from keras_repvgg.front.predict import classify_files, load_predictor

from helpers import photo_crops, sklearn_photos, timm_checkpoint, unreadable_images

SIZE = 64


@pytest.fixture(scope="module")
def a0(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam")
    source = timm_checkpoint("repvgg_a0", seed=16)
    assert main(["convert", str(source), "--input-size", str(SIZE), "-o", str(root / "a0.keras")]) == 0
    assert main(["export", "tflite", str(root / "a0.keras"), "-o", str(root / "a0.tflite")]) == 0
    return root


def _read_shards(prefix) -> list[dict]:
    shards = sorted(prefix.parent.glob(prefix.name + "-[0-9]*-of-*.jsonl"))
    assert shards, prefix
    return [json.loads(line) for shard in shards for line in shard.read_text().splitlines()]


@pytest.mark.slow
def test_pipeline_on_two_worker_processes_equals_predict(a0, tmp_path):
    images = tmp_path / "images"
    good = photo_crops(images, 240, seed=4)
    (images / "bad").mkdir()
    bad = unreadable_images(images / "bad")
    assert len(good) == 246 and len(bad) == 5
    pattern, prefix = str(images / "**"), tmp_path / "out" / "predictions"
    run = subprocess.run(
        [sys.executable, "-m", "keras_repvgg.front.beam", "--model", str(a0 / "a0.tflite"), "--input", pattern,
         "--output", str(prefix), "--batch-size", "16",
         "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0, run.stderr[-3000:]
    # The model was loaded more than once: once in each worker (LiteRT says so on stderr).
    assert run.stderr.count("Created TensorFlow Lite XNNPACK delegate") >= 2, run.stderr[-3000:]

    records, dead = _read_shards(prefix), _read_shards(tmp_path / "out" / "predictions-errors")
    expected = list(classify_files(load_predictor(a0 / "a0.tflite"), [pattern]))
    assert len(expected) == 251
    by_image = lambda rs: sorted(rs, key=lambda r: r["image"])
    assert by_image(records) == by_image([r for r in expected if "error" not in r])  # bit for bit
    assert by_image(dead) == by_image([r for r in expected if "error" in r])  # the same messages
    assert sorted(r["image"] for r in dead) == sorted(map(str, bad))


def _named(keyed) -> dict:
    """A keyed result's record under its key: bytes have no name of their own ("<bytes>")."""
    key, result = keyed
    return json.loads(json.dumps(result.inference).replace("<bytes>", key))


def test_model_handler_takes_bytes_and_paths(a0, tmp_path):
    """In one process: keyed bytes and plain paths, a .keras model, through RunInference."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.testing.util import assert_that

    from keras_repvgg.front.beam import RepVGGModelHandler

    photos = [str(p) for p in sklearn_photos()]
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not a JPEG")
    paths = [*photos, str(junk)]
    expected = list(classify_files(load_predictor(a0 / "a0.keras"), paths, top=3))
    handler = RepVGGModelHandler(str(a0 / "a0.keras"), top=3, max_batch_size=2)

    def close_to(expected):
        def check(got):
            got = sorted(got, key=lambda r: r["image"])
            assert [r["image"] for r in got] == sorted(r["image"] for r in expected)
            for ours, theirs in zip(got, sorted(expected, key=lambda r: r["image"]), strict=True):
                assert ours.get("error") == theirs.get("error")
                assert [t["index"] for t in ours.get("top", [])] == [t["index"] for t in theirs.get("top", [])]
                np.testing.assert_allclose([t["probability"] for t in ours.get("top", [])],
                                           [t["probability"] for t in theirs.get("top", [])], rtol=1e-5)
        return check

    with beam.Pipeline() as pipeline:
        from_paths = (pipeline | "Paths" >> beam.Create(paths) | "By path" >> RunInference(handler)
                      | "Path records" >> beam.Map(lambda result: result.inference))
        keyed = (pipeline | "Bytes" >> beam.Create([(p, open(p, "rb").read()) for p in paths])
                 | "By bytes" >> RunInference(KeyedModelHandler(handler))
                 | "Bytes records" >> beam.Map(_named))
        assert_that(from_paths, close_to(expected), label="paths")
        assert_that(keyed, close_to(expected), label="bytes")


def test_the_package_imports_without_beam():
    code = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "apache_beam":
            raise ImportError("no apache_beam here")
sys.meta_path.insert(0, Blocked())
import keras_repvgg, keras_repvgg.front.cli, keras_repvgg.front.predict
keras_repvgg.front.cli.build_parser()
try:
    import keras_repvgg.front.beam
except ImportError as err:
    print(err)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "keras_repvgg.front.beam needs Apache Beam: pip install 'keras-repvgg[beam]'" in run.stdout
