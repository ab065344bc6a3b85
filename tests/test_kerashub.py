"""KerasHub presets: written by us (`keras-repvgg convert --preset`, `keras_repvgg.save_preset`),
loaded by KerasHub's own `from_preset` in a fresh process, held against timm's logits.

The fresh process imports keras_repvgg, then keras_hub, and nothing of the test: KerasHub
finds our classes by their registered names. It loads each preset as an ImageClassifier and
as a Backbone, runs the image converter on real photos, fine-tunes a new head
(`num_classes=3`) and exports that through our TFLite and SavedModel exporters.
KerasHub runs on Keras 3 only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_close_to_timm, random_images, sklearn_photos, timm_checkpoint, timm_reference

pytestmark = pytest.mark.keras3_only

SIZE = 64  # the exactness of the weights does not depend on the size; 64 px keeps the run short
SEED = 3
FINE_TUNE_CLASSES = 3

# The fresh process: argv = folder, then "name=preset_dir" pairs. It writes name.npz per preset
# and prints one JSON line of what it saw.
CHILD = r"""
import json, sys
import numpy as np
import keras_repvgg
import keras_hub
from PIL import Image

folder, presets = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
x = np.load(f"{folder}/x.npy")
photos = [np.asarray(Image.open(p).convert("RGB")) for p in json.load(open(f"{folder}/photos.json"))]
seen = {}
for name, preset in presets.items():
    classifier = keras_hub.models.ImageClassifier.from_preset(preset)
    backbone = keras_hub.models.Backbone.from_preset(preset)
    fc = classifier.get_layer("head.fc")
    out = {"logits": np.asarray(classifier(x)), "features": np.asarray(backbone(x)),
           "kernel": np.asarray(fc.kernel), "bias": np.asarray(fc.bias),
           "converted": np.stack([np.asarray(classifier.preprocessor(p)) for p in photos])}
    seen[name] = {"classifier": type(classifier).__name__, "backbone": type(backbone).__name__,
                  "converter": type(classifier.preprocessor.image_converter).__name__}
    if name == "a0":  # a new head, fine-tuned on 0-255 images through KerasHub's own pipeline
        tuned = keras_hub.models.ImageClassifier.from_preset(preset, num_classes=3)
        images = np.random.default_rng(0).integers(0, 256, (8, 80, 96, 3)).astype("float32")
        before = np.asarray(tuned.backbone.get_layer("stem.reparam_conv").kernel).copy()
        history = tuned.fit(images, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
        out["tuned_loss"] = np.asarray(history.history["loss"])
        out["tuned_moved"] = np.abs(np.asarray(tuned.backbone.get_layer("stem.reparam_conv").kernel) - before).max()
        out["tuned_logits"] = np.asarray(tuned(x))
        from keras_repvgg.tflite import export_tflite, write_tflite
        from keras_repvgg.exports.serving import export_saved_model
        write_tflite(export_tflite(tuned, "float32", output="logits", input="normalized"), f"{folder}/tuned.tflite")
        export_saved_model(tuned, f"{folder}/tuned_serving")
        seen["tuned_output"] = list(tuned.output_shape)
    np.savez(f"{folder}/{name}.npz", **out)
print(json.dumps(seen))
"""


def _fresh(folder: Path, presets: dict[str, Path]) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder), *(f"{k}={v}" for k, v in presets.items())],
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _inputs(folder: Path) -> np.ndarray:
    x = random_images(2, SIZE, seed=SEED)
    np.save(folder / "x.npy", x)
    (folder / "photos.json").write_text(json.dumps([str(p) for p in sklearn_photos()]))
    return x


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    """A0 through the command line (the fidelity measured against timm in its own process),
    B1g4 (grouped) through the Python API; then both loaded by KerasHub in a fresh process."""
    import keras_repvgg

    folder = tmp_path_factory.mktemp("kerashub")
    x = _inputs(folder)
    cli = subprocess.run(
        [sys.executable, "-m", "keras_repvgg", "convert", str(timm_checkpoint("repvgg_a0", SEED)),
         "--input-size", str(SIZE), "--preset", str(folder / "a0")],
        capture_output=True, text=True, timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    keras_repvgg.save_preset(timm_checkpoint("repvgg_b1g4", SEED), folder / "b1g4", input_size=SIZE, measure=False)
    seen = _fresh(folder, {"a0": folder / "a0", "b1g4": folder / "b1g4"})
    return folder, x, cli.stdout, seen


@pytest.mark.parametrize("name,arch", [("a0", "repvgg_a0"), ("b1g4", "repvgg_b1g4")])
def test_keras_hub_loads_our_preset_and_gives_timms_logits(presets, name, arch):
    folder, x, _, seen = presets
    out = np.load(folder / f"{name}.npz")
    assert seen[name] == {"classifier": "RepVGGImageClassifier", "backbone": "RepVGGBackbone",
                          "converter": "RepVGGImageConverter"}
    assert_close_to_timm(out["logits"], timm_reference(arch, SEED, x))
    # The Backbone preset is the classifier's trunk: pooled and put through the loaded head,
    # its features give the same logits.
    head = out["features"].mean(axis=(1, 2)) @ out["kernel"] + out["bias"]
    np.testing.assert_allclose(head, out["logits"], rtol=0, atol=1e-4 * np.abs(out["logits"]).max())


def test_the_image_converter_applies_timms_eval_transform(presets):
    """KerasHub's preprocessor runs our converter on whole photos: the pixels Pillow's path
    (`load_image`, timm's transform) gives, within its 1 step of 255 (tests/test_transform.py)."""
    from keras_repvgg.core.configs import Preprocessing
    from keras_repvgg.core.preprocessing import load_image

    folder, *_ = presets
    converted = np.load(folder / "a0.npz")["converted"]
    reference = np.stack([load_image(p, Preprocessing(input_size=SIZE)) for p in sklearn_photos()])
    assert converted.shape == reference.shape == (2, SIZE, SIZE, 3)
    steps = np.abs(converted - reference) * 255 * np.asarray(Preprocessing().std)  # in 8-bit steps
    assert steps.max() <= 1 + 1e-3 and np.mean(steps > 0.5) <= 0.02


def test_fine_tuning_from_the_preset_and_our_exports(presets):
    """`from_preset(..., num_classes=3)` trains a new head (and the backbone), and our TFLite
    and SavedModel exporters take the KerasHub model as it is."""
    from keras_repvgg.core.configs import Preprocessing
    from keras_repvgg.core.transform import denormalize
    from keras_repvgg.front.loading import load_artifact
    from keras_repvgg.tflite.runtime import TFLiteRunner

    folder, x, _, seen = presets
    out = np.load(folder / "a0.npz")
    assert seen["tuned_output"] == [None, FINE_TUNE_CLASSES]
    assert np.isfinite(out["tuned_loss"]).all() and out["tuned_moved"] > 0
    tflite = TFLiteRunner((folder / "tuned.tflite").read_bytes())(x)
    scale = np.abs(out["tuned_logits"]).max()
    assert np.abs(tflite - out["tuned_logits"]).max() <= 1e-4 * scale
    served = load_artifact(folder / "tuned_serving").model.signatures["serving_default"]  # takes 0-255 pixels
    pixels = denormalize(x, Preprocessing(input_size=SIZE))
    logits = served(**{next(iter(served.structured_input_signature[1])): pixels})["logits"].numpy()
    assert np.abs(logits - out["tuned_logits"]).max() <= 1e-4 * scale


def test_the_model_card_states_what_the_preset_is(presets):
    folder, _, cli_out, _ = presets
    card = (folder / "a0" / "README.md").read_text()
    header = card.split("---")[1]
    assert "library_name: keras-hub" in header and "pipeline_tag: image-classification" in header
    assert "| variant | `repvgg_a0` |" in card
    assert f"| input | {SIZE}x{SIZE} RGB" in card
    assert "| parameters | 8,309,384 |" in card
    assert "repvgg_a0-seed3-1000-train.safetensors" in card
    # The fidelity was measured by timm in its own process, and the command printed it.
    measured = float(card.split("largest absolute difference ")[1].split()[0])
    assert 0 < measured < 1e-4 and "timm's logits: largest difference" in cli_out
    assert "not measured (measure=False)" in (folder / "b1g4" / "README.md").read_text()


def test_upload_preset_sends_the_folder_with_our_card(presets, monkeypatch):
    """`keras_hub.upload_preset("hf://...")` cannot reach the hub here: its calls to
    huggingface_hub are recorded instead. With the card already on the hub (docs/kerashub.md:
    upload README.md first), KerasHub uploads the folder as we wrote it, card included."""
    import keras_hub
    from keras_hub.src.utils import preset_utils

    folder, *_ = presets
    calls = {}

    class Repo:
        repo_id = "someone/repvgg_a0"

    monkeypatch.setattr(preset_utils.huggingface_hub, "create_repo", lambda repo_id, exist_ok: Repo())
    monkeypatch.setattr(preset_utils.huggingface_hub, "file_exists", lambda repo_id, filename: True)

    def upload_folder(repo_id, folder_path):
        calls[repo_id] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}

    monkeypatch.setattr(preset_utils.huggingface_hub, "upload_folder", upload_folder)
    keras_hub.upload_preset("hf://someone/repvgg_a0", str(folder / "a0"))
    sent = calls["someone/repvgg_a0"]
    assert {"config.json", "task.json", "preprocessor.json", "image_converter.json", "metadata.json",
            "model.weights.h5", "task.weights.h5", "README.md"} <= set(sent)
    assert sent["README.md"] == (folder / "a0" / "README.md").read_bytes()


def test_a_preset_folder_is_a_model_kind(presets):
    """`predict`, `export` and `evaluate` load a preset folder as our model (load_artifact)."""
    from keras_repvgg.core.artifacts import ArtifactKind
    from keras_repvgg.front.loading import load_artifact
    from keras_repvgg.models.model import describe

    folder, x, _, _ = presets
    artifact = load_artifact(folder / "a0")
    assert artifact.kind is ArtifactKind.PRESET
    assert describe(artifact.model).variant == "repvgg_a0" and describe(artifact.model).head == "logits"
    np.testing.assert_allclose(artifact.model.predict(x, verbose=0), np.load(folder / "a0.npz")["logits"],
                               rtol=0, atol=1e-5)


def test_bad_preset_targets_and_foreign_presets_are_refused(presets, tmp_path):
    import keras_repvgg
    from keras_repvgg.core.errors import KerasRepVGGError
    from keras_repvgg.front.loading import load_artifact

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(KerasRepVGGError, match="taken: exists and is not an empty folder"):
        keras_repvgg.save_preset(timm_checkpoint("repvgg_a0", SEED), taken, input_size=SIZE, measure=False)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]  # left as it was

    foreign = tmp_path / "resnet"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"registered_name": "keras_hub>ResNetBackbone"}))
    (foreign / "model.weights.h5").write_bytes(b"")
    with pytest.raises(KerasRepVGGError, match=r"config.json: registered_name is 'keras_hub>ResNetBackbone', "
                                               r"expected 'keras_repvgg>RepVGGBackbone'"):
        load_artifact(foreign)

    run = subprocess.run([sys.executable, "-m", "keras_repvgg", "convert", str(timm_checkpoint("repvgg_a0", SEED)),
                          "--preset", str(taken)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"keras-repvgg: error: {taken}: exists and is not an empty folder; "
                                               "a preset needs a new one"]


@pytest.mark.slow
def test_d2se_preset_gives_timms_logits(tmp_path):
    """Squeeze-excitation and 320 px: D2se through the same fresh-process path."""
    import keras_repvgg

    x = _inputs(tmp_path)
    keras_repvgg.save_preset(timm_checkpoint("repvgg_d2se", SEED), tmp_path / "d2se", input_size=SIZE, measure=False)
    seen = _fresh(tmp_path, {"d2se": tmp_path / "d2se"})
    assert seen["d2se"]["classifier"] == "RepVGGImageClassifier"
    assert_close_to_timm(np.load(tmp_path / "d2se.npz")["logits"], timm_reference("repvgg_d2se", SEED, x))
