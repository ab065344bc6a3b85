"""The front door: timm's eval transform on real photographs, ImageNet labels, and
`keras-repvgg predict` giving the same answer whatever kind of model it is handed."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from keras_repvgg import decode_predictions, get_variant, imagenet_labels, load_image, preprocess_input
from keras_repvgg.converters import convert
from keras_repvgg.front.cli import PARTIAL, main
from keras_repvgg.front.predict import classify_files, load_predictor

from helpers import assert_same_top_k, make_timm_model, photo_crops, save_checkpoint, sklearn_photos, unreadable_images

PHOTOS = sklearn_photos()  # china.jpg, flower.jpg; asserted, never an empty loop
SIZE = 64


@pytest.mark.parametrize("arch", ["repvgg_a0", "repvgg_d2se"])  # 224 px crop 0.875; 320 px crop 1.0
def test_load_image_is_timms_eval_transform_on_photographs(arch):
    import timm
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=timm.create_model(arch)))
    std = np.asarray(get_variant(arch).preprocessing.std)
    for photo in PHOTOS:
        with Image.open(photo) as image:
            reference = transform(image.convert("RGB")).numpy().transpose(1, 2, 0)
        ours = load_image(photo, arch)
        diff = np.abs(ours - reference) * std * 255  # in 0-255 pixel steps
        print(photo.name, arch, f"mean {diff.mean():.4f}/255, max {diff.max():.4f}/255")
        assert ours.shape == reference.shape and diff.mean() < 1 / 255 and diff.max() < 1e-3


def test_preprocess_input_equals_the_in_model_preprocessing(tmp_path):
    path = save_checkpoint(make_timm_model("repvgg_a0", seed=6), tmp_path / "a0.safetensors")
    plain = convert(path, input_size=SIZE)
    with_preprocessing = convert(path, input_size=SIZE, include_preprocessing=True)
    pixels = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3)).astype(np.float32)
    ours = plain.predict(preprocess_input(pixels), verbose=0)
    inside = with_preprocessing.predict(pixels, verbose=0)
    assert np.abs(ours - inside).max() <= 1e-5 * np.abs(ours).max()
    with pytest.raises(ValueError, match="3 channels last"):
        preprocess_input(np.zeros((2, 3, 8, 8)))


def test_decode_predictions():
    preds = np.full((2, 1000), 1e-4, np.float32)
    preds[0, 1], preds[0, 0], preds[1, 999] = 0.9, 0.05, 0.7
    first, second = decode_predictions(preds, top=2)
    assert first == [("n01443537", "goldfish", pytest.approx(0.9)), ("n01440764", "tench", pytest.approx(0.05))]
    assert second[0][:2] == ("n15075141", "toilet tissue")
    labels = imagenet_labels()
    assert len(labels) == 1000 and len(set(labels)) > 990  # a few ImageNet names repeat ("crane")
    custom = decode_predictions(np.array([[0.1, 0.7, 0.2]]), top=5, labels=["cat", "dog", "fox"])
    assert custom == [[("1", "dog", pytest.approx(0.7)), ("2", "fox", pytest.approx(0.2)), ("0", "cat", pytest.approx(0.1))]]
    with pytest.raises(ValueError, match="pass their labels"):
        decode_predictions(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="2 label names for a 3-class model"):
        decode_predictions(np.zeros((1, 3)), labels=["a", "b"])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One timm A0 (1000 classes) as every MODEL kind predict takes, and some images."""
    root = tmp_path_factory.mktemp("predict")
    source = save_checkpoint(make_timm_model("repvgg_a0", seed=8), root / "a0.safetensors")
    size = ["--input-size", str(SIZE)]
    assert main(["convert", str(source), *size, "-o", str(root / "a0.keras")]) == 0
    assert main(["export", "tflite", str(source), *size, "-o", str(root / "a0.tflite")]) == 0
    assert main(["export", "savedmodel", str(source), *size, "-o", str(root / "serving")]) == 0
    images = [shutil.copy(p, root / p.name) for p in PHOTOS]
    with Image.open(PHOTOS[0]) as photo:  # the same photograph as PNG, 16:9 and grayscale
        photo.convert("L").resize((320, 180)).save(root / "gray.png")
    return {
        "keras": root / "a0.keras", "tflite": root / "a0.tflite", "savedmodel": root / "serving",
        "source": source, "images": [*images, str(root / "gray.png")],
    }


def _predict_json(model, images, capsys, *extra) -> list[dict]:
    assert main(["predict", str(model), *map(str, images), "--json", *extra]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON Lines


def test_predict_gives_the_same_top5_whatever_the_model_kind(models, capsys):
    images = [str(p) for p in models["images"]]
    results = {
        kind: _predict_json(models[kind], images, capsys, "--top", "1000",
                            *(["--input-size", str(SIZE)] if kind == "source" else []))
        for kind in ("keras", "tflite", "savedmodel", "source")
    }
    # The checkpoint (a bare safetensors file) names no classes: every kind shows the indices,
    # not ImageNet's names for a head that merely has 1000 classes.
    labels = [str(i) for i in range(1000)]
    for kind, result in results.items():
        assert [r["image"] for r in result] == images, kind  # the images' order kept, none dropped
        for record in result:
            assert sorted(t["index"] for t in record["top"]) == list(range(1000)), kind
            assert [t["label"] for t in record["top"]] == [labels[t["index"]] for t in record["top"]], kind
            probabilities = [t["probability"] for t in record["top"]]
            assert probabilities == sorted(probabilities, reverse=True), kind  # most probable first
    # All 1000 probabilities within 1e-4 relative, and the top 5 as a set: XNNPACK (TFLite),
    # oneDNN (Keras) and TensorFlow's kernels (SavedModel) round differently, so near-tied classes
    # may swap places. Measured: 1.8e-6 relative at most between any two kinds, for batches of
    # 1-49 images, with ONEDNN_MAX_CPU_ISA=AVX2 and with TF_ENABLE_ONEDNN_OPTS=0: 55 times below.
    reference = np.stack([_probabilities(r) for r in results["keras"]])
    for kind, result in results.items():
        assert_same_top_k(np.stack([_probabilities(r) for r in result]), reference, rtol=1e-4, what=kind)
    # Without --top, the five most probable (TFLite runs one image per call: the same numbers).
    assert [r["top"] for r in _predict_json(models["tflite"], images, capsys)] == \
        [r["top"][:5] for r in results["tflite"]]


def test_predict_text_output_and_bad_images(models, tmp_path, capsys):
    assert main(["predict", str(models["tflite"]), str(models["images"][0]), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(models["images"][0]) and len(lines) == 4 and lines[1].startswith("  1. ")
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"plain text, not a JPEG")
    assert main(["predict", str(models["keras"]), str(bad), str(models["images"][0])]) == PARTIAL
    out, err = capsys.readouterr()
    assert out.splitlines()[:2] == [str(bad), f"  error: {bad}: not an image file (no format Pillow reads)"]
    assert out.splitlines()[2] == str(models["images"][0]) and len(out.splitlines()) == 8  # the run went on
    assert err.strip() == "keras-repvgg: 1 of 2 images could not be read (their records hold the error)"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """40 crops and scales of the photographs, 6 in odd modes, and 5 that no decoder reads."""
    root = tmp_path_factory.mktemp("images")
    good = photo_crops(root, 40, seed=1)
    (root / "bad").mkdir()
    bad = unreadable_images(root / "bad")
    assert len(good) == 46 and len(bad) == 5
    return {"root": root, "good": good, "bad": bad}


def _probabilities(record) -> np.ndarray:
    return np.array([t["probability"] for t in sorted(record["top"], key=lambda t: t["index"])])


@pytest.mark.parametrize("kind", ["tflite", "keras", "savedmodel", "source"])
def test_streaming_equals_the_in_memory_result(kind, models, image_folder):
    """Batches of 7 with 2 decoding threads give what one in-memory batch of every readable
    image gives; the unreadable ones are records with their error, in their place."""
    from keras_repvgg.core.preprocessing import load_images

    predictor = load_predictor(models[kind], input_size=SIZE if kind == "source" else None)
    streamed = list(classify_files(predictor, [image_folder["root"]], top=1000, batch_size=7, threads=2))
    good = {str(p) for p in image_folder["good"]}
    assert sorted(r["image"] for r in streamed) == sorted(good | {str(p) for p in image_folder["bad"]})
    errors = {r["image"]: r["error"] for r in streamed if "error" in r}
    assert set(errors) == {str(p) for p in image_folder["bad"]}
    assert all(error.startswith(image + ": ") for image, error in errors.items())
    assert "12000x10000 pixels" in errors[str(image_folder["root"] / "bad" / "huge.png")]

    classified = [r for r in streamed if "error" not in r]
    in_memory = predictor.probabilities(load_images([r["image"] for r in classified], predictor.preprocessing,
                                                    normalize=False))
    ours = np.stack([_probabilities(r) for r in classified])
    if kind == "tflite":  # one image per call whatever the batch: bit for bit
        np.testing.assert_array_equal(ours, in_memory)
    else:  # Keras and TensorFlow may pick other kernels for other batch sizes
        np.testing.assert_allclose(ours, in_memory, rtol=1e-5, atol=1e-8)


def test_predict_writes_jsonl_and_csv_whole(models, image_folder, tmp_path, capsys, monkeypatch):
    root = image_folder["root"]
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join(map(str, image_folder["bad"][:2] + image_folder["good"][:3])) + "\n")
    inputs = [str(root / "set0"), str(root / "*.png"), f"@{listed}", str(tmp_path / "nothing*.jpg")]
    expected = list(classify_files(load_predictor(models["tflite"]), inputs, top=3))
    assert len(expected) == 20 + 4 + 5 + 1 and sum("error" in r for r in expected) == 3

    model = str(models["tflite"])
    assert main(["predict", model, *inputs, "--top", "3", "--json", "--batch-size", "4"]) == PARTIAL
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == expected  # stdout: JSON Lines as they come
    assert err.strip() == "keras-repvgg: 3 of 30 images could not be read (their records hold the error)"
    assert "images/s" not in err  # no progress bar when stderr is not a terminal

    assert main(["predict", model, *inputs, "--top", "3", "-o", str(tmp_path / "out.jsonl")]) == PARTIAL
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == expected
    assert main(["predict", model, *inputs, "--top", "3", "-o", str(tmp_path / "out.csv")]) == PARTIAL
    import csv

    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["image"] for row in rows] == [r["image"] for r in expected]
    for row, record in zip(rows, expected, strict=True):
        assert row["error"] == record.get("error", "")
        for rank, entry in enumerate(record.get("top", []), 1):
            assert (int(row[f"index_{rank}"]), row[f"label_{rank}"], float(row[f"probability_{rank}"])) == \
                (entry["index"], entry["label"], entry["probability"])
    capsys.readouterr()

    # The model fails on the third batch: the old output stays as it was, and no temporary is left.
    real = load_predictor(models["tflite"])
    calls = []

    def failing(pixels):
        calls.append(len(pixels))
        if len(calls) % 3 == 0:
            raise RuntimeError("the model broke")
        return real.probabilities(pixels)

    monkeypatch.setattr("keras_repvgg.front.predict.load_predictor", lambda *a: dataclasses.replace(real, probabilities=failing))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for name in ("out.jsonl", "out.csv", "new.jsonl"):
        assert main(["predict", model, *inputs, "--batch-size", "4", "-o", str(tmp_path / name)]) == 1, calls
        assert "RuntimeError: the model broke" in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert calls == [4] * 9  # three runs, each stopped at its third batch


def test_progress_bar_on_a_terminal_only(models, image_folder):
    """Under a pseudo-terminal, stderr shows the count and images/s; stdout holds only records."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    leader, follower = pty.openpty()
    run = subprocess.Popen([sys.executable, "-m", "keras_repvgg", "predict", str(models["tflite"]),
                            str(image_folder["root"] / "set1"), "--json", "--batch-size", "2"],
                           stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    # Both streams are read as they come, each read bounded by one deadline: a child that
    # hangs, or holds the terminal open, fails the test instead of blocking it.
    stdout = run.stdout.fileno()
    received = {leader: b"", stdout: b""}
    deadline = time.monotonic() + 120
    try:
        reading = set(received)
        while reading:
            left = deadline - time.monotonic()
            assert left > 0, f"predict still running after 120 s; its terminal: {received[leader][-2000:]!r}"
            for fd in select.select(list(reading), [], [], left)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                received[fd] += chunk
                if not chunk:
                    reading.discard(fd)
        assert run.wait(timeout=max(deadline - time.monotonic(), 1)) == 0, received[leader][-2000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=30)
        run.stdout.close()
        os.close(leader)
    out, terminal = received[stdout].decode(), received[leader]
    assert len([json.loads(line) for line in out.splitlines()]) == 20
    assert b"images/s" in terminal and b"20 images" in terminal


def test_the_interpreter_and_decoders_use_every_usable_core(models, image_folder, monkeypatch):
    """LiteRT runs on one thread unless told: predict gives it every core the process may
    use (its affinity), and decodes on as many threads."""
    import concurrent.futures

    import ai_edge_litert.interpreter as litert

    from keras_repvgg.front import predict
    from keras_repvgg.tflite import runtime

    expected = list(classify_files(load_predictor(models["tflite"]), [image_folder["root"]], batch_size=4))
    threads = {}
    real_interpreter, real_pool = litert.Interpreter, concurrent.futures.ThreadPoolExecutor

    def interpreter(*args, **kwargs):
        threads["interpreter"] = kwargs["num_threads"]
        return real_interpreter(*args, **kwargs)

    def pool(workers, **kwargs):
        threads["decoders"] = workers
        return real_pool(workers, **kwargs)

    monkeypatch.setattr(litert, "Interpreter", interpreter)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 3)
    monkeypatch.setattr(predict, "usable_cores", lambda: 3)
    monkeypatch.setattr(predict, "ThreadPoolExecutor", pool)
    predictor = load_predictor(models["tflite"])
    records = list(classify_files(predictor, [image_folder["root"]], batch_size=4))
    assert threads == {"interpreter": 3, "decoders": 3}
    top = lambda rs: [(r["image"], [t["index"] for t in r.get("top", [])]) for r in rs]  # noqa: E731
    assert len(expected) > 2 and top(records) == top(expected)  # the same records
