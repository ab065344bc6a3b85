"""The command line and the hub-id path, offline against a hub cache laid out here."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from keras_repvgg import keras
from keras_repvgg.converters import convert

from helpers import (
    assert_close_to_timm,
    make_timm_model,
    random_images,
    reparameterized,
    torch_logits,
)

HUB_ID = "timm/repvgg_a0.rvgg_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cli(*args, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "keras_repvgg", *map(str, args)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache holding a timm A0 (trained-form weights, 10 classes, 96 px)."""
    from timm.models import save_for_hf

    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    model = make_timm_model("repvgg_a0", seed=11, num_classes=10)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 96, 96)}
    labels = [f"class_{i}" for i in range(10)]
    save_for_hf(model, snapshot, model_config={"label_names": labels}, safe_serialization=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return {"home": home, "snapshot": snapshot, "model": model, "labels": labels}


def test_convert_hub_id_offline_writes_a_model_that_predicts_the_same(hub_cache, tmp_path):
    out = tmp_path / "a0.keras"
    stdout = _cli("convert", HUB_ID, "-o", out, env={"HF_HOME": hub_cache["home"], "HF_HUB_OFFLINE": "1"})
    assert "variant repvgg_a0" in stdout and "10 classes" in stdout and "(96, 96, 3)" in stdout
    timm_params = sum(p.numel() for p in reparameterized(hub_cache["model"]).parameters())
    assert f"parameters {timm_params:,}" in stdout  # A0's backbone with a 10-class head
    assert out.is_file()

    x = random_images(2, 96, seed=4)
    loaded = keras.models.load_model(out)
    direct = convert(hub_cache["snapshot"])  # the same snapshot, read as a folder
    assert loaded.input_shape == (None, 96, 96, 3)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), direct.predict(x, verbose=0))
    assert_close_to_timm(loaded.predict(x, verbose=0), torch_logits(hub_cache["model"], x))


def test_folder_config_overrides_variant_defaults(hub_cache):
    from keras_repvgg.converters import convert_checkpoint

    result = convert_checkpoint(hub_cache["snapshot"], include_preprocessing=True)
    assert result.label_names == hub_cache["labels"]
    assert result.preprocessing.input_size == 96
    assert result.model.output_shape == (None, 10)
    assert result.model.get_layer("preprocess.normalize") is not None


def test_timms_imagenet_checkpoint_is_labelled_with_imagenets_names(tmp_path):
    """timm's ImageNet-1k checkpoint says so (its pretrained_cfg tag, as the README's main job's
    `timm/repvgg_a0.rvgg_in1k` does): its names are recorded in the model and shown by predict.
    The same weights without their config name nothing: 1000 classes alone are not ImageNet."""
    import shutil

    from timm.models import save_for_hf

    from keras_repvgg import imagenet_labels, save_model
    from keras_repvgg.converters import convert_checkpoint
    from keras_repvgg.front.predict import load_predictor
    from keras_repvgg.models.model import describe

    folder = tmp_path / "a0"
    save_for_hf(make_timm_model("repvgg_a0", seed=12), folder, safe_serialization=True)
    result = convert_checkpoint(folder, input_size=64)
    assert result.label_names == imagenet_labels() and describe(result.model).labels == tuple(imagenet_labels())
    assert load_predictor(save_model(result.model, tmp_path / "a0.keras")).labels[:2] == ["tench", "goldfish"]
    bare = shutil.copy(folder / "model.safetensors", tmp_path / "a0.safetensors")
    assert convert_checkpoint(bare, input_size=64).label_names is None


def test_convert_file_writes_a_model_that_predicts_the_same(a0_checkpoints, tmp_path):
    out = tmp_path / "nested" / "a0.keras"
    stdout = _cli("convert", a0_checkpoints["train"], "--input-size", 64, "-o", out)
    assert "training form" in stdout and "parameters 8,309,384" in stdout
    x = a0_checkpoints["x"]
    loaded = keras.models.load_model(out)
    direct = convert(a0_checkpoints["train"], input_size=64)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), direct.predict(x, verbose=0))
    assert_close_to_timm(loaded.predict(x, verbose=0), a0_checkpoints["logits"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["a0.keras"]  # no temporary left


def test_list_shows_every_variant():
    from keras_repvgg import VARIANTS
    from keras_repvgg.core.parameters import deploy_parameter_count

    stdout = _cli("list")
    for variant in VARIANTS.values():
        line = next(row for row in stdout.splitlines() if row.startswith(variant.name + " "))
        assert f"{deploy_parameter_count(variant):,}" in line
        assert (variant.timm_tag or "-") in line
    assert len(stdout.splitlines()) == len(VARIANTS) + 1


def test_converting_safetensors_does_not_import_torch(a0_checkpoints, tmp_path):
    code = (
        "import sys; from keras_repvgg.converters import convert; "
        f"convert({str(a0_checkpoints['train'])!r}, input_size=64); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm')); "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
