"""`train` and `evaluate`: a folder of labelled images in, a fused labelled model out, and
its accuracy measured the way an app would see it.

The images are scikit-learn's digits (real handwriting, 8x8, shown at 32 px), written as PNG
files into one subfolder per class, with one corrupt file among them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from benchmarks.digits import write_digit_folders

from helpers import digits_backbone_checkpoint

CLASSES = ("0", "1", "2", "3")
SIZE = 32


def cli(*args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    """The command line in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "keras_repvgg.front.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def train_args(root, weights, epochs: int = 10, warmup: int = 2) -> list[str]:
    # The defaults (10 epochs), with a 2-epoch warm-up of the head (so that it is run too) and
    # no flips (digits are not mirror images).
    return ["train", str(root / "data"), "-o", str(root / "fused.keras"), "--weights", str(weights),
            "--input-size", str(SIZE), "--validation", str(root / "val"), "--warmup-epochs", str(warmup),
            "--epochs", str(epochs), "--no-flip"]


def digits_task(root):
    write_digit_folders(root / "data", per_class=40)
    write_digit_folders(root / "val", per_class=50, offset=40)
    return digits_backbone_checkpoint(seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run of `keras-repvgg train` from a backbone pretrained on digits 4-9, on digits 0-3,
    with a validation folder and a corrupt image in the training folder."""
    root = tmp_path_factory.mktemp("train")
    weights = digits_task(root)
    (root / "data" / "2" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    run = cli(*train_args(root, weights), "--save-train-form", str(root / "train.keras"))
    return root, run


def test_train_writes_a_fused_labelled_model_and_its_training_form(trained):
    from keras_repvgg.core.folders import read_folder
    from keras_repvgg.core.preprocessing import load_images
    from keras_repvgg.models.io import load_model
    from keras_repvgg.models.model import describe

    root, run = trained
    assert run.returncode == 0, run.stderr[-3000:]
    fused, train_form = load_model(root / "fused.keras"), load_model(root / "train.keras")
    assert describe(fused).form == "deploy" and describe(train_form).form == "train"
    for model in (fused, train_form):
        description = describe(model)
        assert description.labels == CLASSES and description.classes == 4 and description.head == "logits"
        assert description.preprocessing.input_size == SIZE
    assert not (root / "fused.keras.backup").exists()  # the backup goes once the outputs are whole
    val = read_folder(root / "val")
    x = load_images(val.paths, describe(fused).preprocessing)
    expected = train_form.predict(x, verbose=0)
    assert np.abs(fused.predict(x, verbose=0) - expected).max() <= 1e-4 * np.abs(expected).max()


def test_train_learns_the_digits_and_skips_the_corrupt_file(trained):
    from keras_repvgg.front.evaluate import evaluate

    root, run = trained
    assert run.returncode == 0, run.stderr[-3000:]
    # One line naming the corrupt file; the run went on without it.
    assert f"keras-repvgg: skipped {root / 'data' / '2' / 'broken.png'}: " in run.stderr
    assert "trained on 160 images of 4 classes (0, 1, 2, 3)" in run.stdout
    said = float(run.stdout.split("validation top-1 of the fused model ")[1].split("%")[0]) / 100
    result = evaluate([root / "fused.keras"], root / "val")
    # What train reports is what evaluate measures on the same folder (one eval transform).
    assert abs(result.scores[0].top1 - said) <= 1 / 200 + 1e-9
    # Measured with these settings over 5 seeds (backbone and training), Keras 3 on an AMD EPYC:
    # 79.5-87.0% (docs/training.md). Chance is 25%.
    assert result.scores[0].top1 >= 0.7


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_epoch(tmp_path):
    # What is checked is where the second run starts and that it finishes, not what it learns:
    # one batch of training images and a few validation ones make each epoch a single step
    # (the backbone is the one the other tests start from).
    write_digit_folders(tmp_path / "data", per_class=8)
    write_digit_folders(tmp_path / "val", per_class=4, offset=40)
    weights = digits_backbone_checkpoint(seed=0)
    args = train_args(tmp_path, weights, epochs=3, warmup=0)
    process = subprocess.Popen([sys.executable, "-m", "keras_repvgg.front.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    state = tmp_path / "fused.keras.backup" / "whole" / "training_metadata.json"
    deadline = time.monotonic() + 300
    try:
        while not state.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.exists(), "no epoch was backed up"
    finally:
        process.kill()
        process.communicate(timeout=60)
    assert not (tmp_path / "fused.keras").exists()  # nothing half-written
    again = cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from the backup of an interrupted run" in again.stdout
    epochs = [int(line.split()[1].split("/")[0]) for line in again.stdout.splitlines() if line.startswith("Epoch ")]
    assert epochs and epochs[0] >= 2 and epochs[-1] == 3, again.stdout
    assert (tmp_path / "fused.keras").is_file() and not (tmp_path / "fused.keras.backup").exists()


def test_evaluate_scores_every_model_kind_as_predict_sees_them(trained, tmp_path, capfd):
    from keras_repvgg.core.folders import read_folder
    from keras_repvgg.core.preprocessing import load_images
    from keras_repvgg.front.cli import main
    from keras_repvgg.models.io import load_model

    root = trained[0]
    tflite = tmp_path / "fused.tflite"
    assert main(["export", "tflite", str(root / "fused.keras"), "-o", str(tflite)]) == 0
    (root / "val" / "1" / "unreadable.jpg").write_bytes(b"no image")
    try:
        capfd.readouterr()
        code = main(["evaluate", str(root / "fused.keras"), str(tflite), str(root / "train.keras"), str(root / "val"),
                     "--report", str(tmp_path / "report.json"), "--confusion", str(tmp_path / "confusion.png")])
    finally:
        (root / "val" / "1" / "unreadable.jpg").unlink()
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "unreadable.jpg" in err and "200 images in 4 classes" in out and "1 unreadable, left out" in out
    report = json.loads((tmp_path / "report.json").read_text())
    keras_row, tflite_row, train_row = report["models"]
    assert [r["kind"] for r in report["models"]] == ["keras", "tflite", "keras"]
    assert report["evaluated"] == 200 and list(report["unreadable"]) == [str(root / "val" / "1" / "unreadable.jpg")]

    # top-1 from the report equals a direct argmax of the model's logits over the same pixels.
    val = read_folder(root / "val")
    fused = load_model(root / "fused.keras")
    logits = fused.predict(load_images(val.paths, _pre(fused)), verbose=0)
    truth = np.asarray(val.labels)
    assert keras_row["top1"] == pytest.approx(float((logits.argmax(-1) == truth).mean()), abs=1e-9)
    recall = [float((logits.argmax(-1)[truth == c] == c).mean()) for c in range(4)]
    assert list(keras_row["recall"].values()) == pytest.approx(recall, abs=1e-9)
    confusion = np.asarray(keras_row["confusion"])
    assert confusion.shape == (4, 5) and confusion.sum() == 200 and np.trace(confusion) == round(200 * keras_row["top1"])
    assert keras_row["top5"] == 1.0  # 4 classes: every class is in the top 5
    assert tflite_row["agreement_with_first"] >= 0.97 and train_row["agreement_with_first"] >= 0.97
    with Image.open(tmp_path / "confusion.png") as picture:
        assert picture.format == "PNG" and picture.width > 3 * 100  # three panels


def _pre(model):
    from keras_repvgg.models.model import describe

    return describe(model).preprocessing


def test_evaluate_matches_classes_by_label_and_refuses_a_mismatch():
    from keras_repvgg.core.errors import DatasetError
    from keras_repvgg.front.evaluate import class_map

    mapping, how = class_map(["3", "x", "0", "1", "2"], CLASSES, "m")
    assert how == "label" and mapping.tolist() == [3, -1, 0, 1, 2]
    mapping, how = class_map(["cat", "dog", "eel", "fox"], CLASSES, "m")
    assert how == "index" and mapping.tolist() == [0, 1, 2, 3]
    with pytest.raises(DatasetError, match="m: its 3 classes"):
        class_map(["a", "b", "c"], CLASSES, "m")


def test_train_errors_are_one_line(tmp_path, capfd):
    from keras_repvgg.front.cli import main

    write_digit_folders(tmp_path / "one", per_class=2)
    for name in CLASSES[1:]:
        for f in (tmp_path / "one" / name).iterdir():
            f.unlink()
        (tmp_path / "one" / name).rmdir()
    capfd.readouterr()
    assert main(["train", str(tmp_path / "one"), "-o", str(tmp_path / "m.keras"), "--arch", "repvgg_a0"]) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and "1 class subfolder(s); expected at least 2" in err and str(tmp_path / "one") in err
    assert not (tmp_path / "m.keras").exists()


def test_the_folder_reaches_a_phone_with_its_class_names(trained, tmp_path, capfd):
    """train -> export tflite int8 (the training folder as calibration) -> evaluate -> MediaPipe."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from keras_repvgg.core.folders import read_folder
    from keras_repvgg.core.preprocessing import load_images
    from keras_repvgg.front.cli import main
    from keras_repvgg.front.evaluate import evaluate

    root = trained[0]
    int8 = tmp_path / "digits_int8.tflite"
    capfd.readouterr()
    # From the training form: the identity-apart graph keeps the accuracy that folding loses
    # (docs/int8.md); it is named here, since the automatic search is tested elsewhere.
    assert main(["export", "tflite", str(root / "train.keras"), "-o", str(int8), "--quantization", "int8",
                 "--calibration", str(root / "data"), "--int8-graph", "identity-apart"]) == 0
    out, err = capfd.readouterr()
    assert "broken.png" in out  # the corrupt training image is skipped with a note, not fatal
    result = evaluate([root / "fused.keras", int8], root / "val")
    float_top1, int8_top1 = result.scores[0].top1, result.scores[1].top1
    print(f"float {float_top1:.3f}, int8 {int8_top1:.3f}, agreement {result.scores[1].agreement:.3f}")
    # docs/training.md's promise: within 2 points (4 of these 200 images). Measured over 5 seeds
    # (`python -m benchmarks --sections training_accuracy`, the automatic graph): -1.5 to +1.0
    # points lost with this recipe (a 2-epoch warm-up), -1.5 to +2.0 with the defaults.
    assert int8_top1 >= float_top1 - 0.02

    val = read_folder(root / "val")
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(int8)), max_results=1)
    # MediaPipe is given the pixels evaluate's transform made (it would only resize, not crop).
    pixels = load_images(val.paths, read_metadata_preprocessing(int8), normalize=False).astype(np.uint8)
    names = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in pixels:
            top = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            names.append(top.classifications[0].categories[0].category_name)
    assert set(names) <= set(CLASSES)  # the folder's names travel in the file
    ours = [CLASSES[i] for i in result.scores[1].predicted]
    assert np.mean([a == b for a, b in zip(names, ours, strict=True)]) >= 0.98  # LiteRT there, LiteRT here


def read_metadata_preprocessing(path):
    from keras_repvgg.core.description import from_export_metadata
    from keras_repvgg.tflite import read_metadata

    return from_export_metadata(read_metadata(path.read_bytes())).preprocessing
