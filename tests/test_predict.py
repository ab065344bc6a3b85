"""The front door: timm's eval transform on real photographs, ImageNet labels, and
`keras-repvgg predict` giving the same answer whatever kind of model it is handed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from keras_repvgg import decode_predictions, get_variant, imagenet_labels, load_image, preprocess_input
from keras_repvgg.cli import main
from keras_repvgg.converters import convert

from helpers import make_timm_model, save_checkpoint, sklearn_photos

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
    return json.loads(capsys.readouterr().out)


def test_predict_gives_the_same_top5_whatever_the_model_kind(models, capsys):
    results = {
        kind: _predict_json(models[kind], models["images"], capsys,
                            *(["--input-size", str(SIZE)] if kind == "source" else []))
        for kind in ("keras", "tflite", "savedmodel", "source")
    }
    reference = results["keras"]
    assert [r["image"] for r in reference] == [str(p) for p in models["images"]]  # order kept
    labels = imagenet_labels()
    for kind, result in results.items():
        assert [r["image"] for r in result] == [str(p) for p in models["images"]], kind  # none dropped
        for ours, ref in zip(result, reference, strict=True):
            assert [t["index"] for t in ours["top"]] == [t["index"] for t in ref["top"]], kind
            assert [t["label"] for t in ours["top"]] == [labels[t["index"]] for t in ref["top"]]
            np.testing.assert_allclose([t["probability"] for t in ours["top"]],
                                       [t["probability"] for t in ref["top"]], rtol=1e-4, err_msg=kind)
        assert all(len(r["top"]) == 5 for r in result)


def test_predict_text_output_and_bad_images(models, tmp_path, capsys):
    assert main(["predict", str(models["tflite"]), str(models["images"][0]), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(models["images"][0]) and len(lines) == 4 and lines[1].startswith("  1. ")
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"plain text, not a JPEG")
    assert main(["predict", str(models["keras"]), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not_an_image.jpg" in err
