"""OpenVINO IR folders (Keras' own `model.export(format="openvino")`), run by OpenVINO's runtime
in a fresh process that imports neither TensorFlow nor torch, against timm's logits.

A0 goes through `keras-repvgg export openvino`, B1g4 (grouped) through the Python API from a
KerasHub model. Keras 3 only: tf-keras' `export` has no formats.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import assert_close_to_timm, random_images, timm_checkpoint, timm_reference

pytestmark = pytest.mark.keras3_only

SIZE = 64
SEED = 4

# argv: inputs.npy, then folders; prints one JSON line per folder: its names and float32 outputs.
CHILD = r"""
import json, sys
import numpy as np
import openvino as ov

x = np.load(sys.argv[1])
core = ov.Core()
for folder in sys.argv[2:]:
    model = core.compile_model(f"{folder}/model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    outs = [model(x[i:i + n])[model.output(0)] for i, n in ((0, len(x)), (0, 1))]
    np.save(f"{folder}/out.npy", outs[0])
    np.save(f"{folder}/out1.npy", outs[1])
    print(json.dumps({"input": sorted(model.input(0).get_names()), "output": sorted(model.output(0).get_names()),
                      "shape": str(model.input(0).get_partial_shape())}))
assert "tensorflow" not in sys.modules and "torch" not in sys.modules
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from keras_repvgg.converters import convert_checkpoint
    from keras_repvgg.exports.openvino import export_openvino
    from keras_repvgg.models.hub import to_hub

    folder = tmp_path_factory.mktemp("openvino")
    cli = subprocess.run([sys.executable, "-m", "keras_repvgg", "export", "openvino",
                          str(timm_checkpoint("repvgg_a0", SEED)), "--input-size", str(SIZE), "-o", str(folder / "a0")],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-3000:]
    hub_model = to_hub(convert_checkpoint(timm_checkpoint("repvgg_b1g4", SEED), input_size=SIZE).model)
    export_openvino(hub_model, folder / "b1g4")
    x = random_images(3, SIZE, seed=SEED)
    np.save(folder / "x.npy", x)
    run = subprocess.run([sys.executable, "-c", CHILD, str(folder / "x.npy"), str(folder / "a0"), str(folder / "b1g4")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = [json.loads(line) for line in run.stdout.strip().splitlines()[-2:]]
    return folder, x, cli.stdout, dict(zip(("a0", "b1g4"), seen, strict=True))


@pytest.mark.parametrize("name,arch", [("a0", "repvgg_a0"), ("b1g4", "repvgg_b1g4")])
def test_openvino_runs_timms_logits(exported, name, arch):
    folder, x, _, seen = exported
    assert seen[name]["input"] == ["images"] and seen[name]["output"] == ["logits"]
    assert seen[name]["shape"] == f"[?,{SIZE},{SIZE},3]"  # the batch is dynamic
    reference = timm_reference(arch, SEED, x)
    assert_close_to_timm(np.load(folder / name / "out.npy"), reference)
    assert_close_to_timm(np.load(folder / name / "out1.npy"), reference[:1])


def test_the_folder_carries_the_description_and_the_command_says_what_it_wrote(exported):
    from keras_repvgg.core.description import from_export_metadata

    folder, _, printed, _ = exported
    assert sorted(p.name for p in (folder / "a0").iterdir()) == ["keras_repvgg.json", "model.bin", "model.xml", "out.npy",
                                                                 "out1.npy"]
    description = from_export_metadata(json.loads((folder / "b1g4" / "keras_repvgg.json").read_text()))
    assert description.variant == "repvgg_b1g4" and description.head == "logits" and description.form == "deploy"
    # float32 weights, as timm's: 36M parameters in 4 bytes each, not float16's 2
    assert (folder / "b1g4" / "model.bin").stat().st_size > 4 * 36_000_000
    lines = printed.strip().splitlines()
    assert lines[0].startswith(f"wrote {folder / 'a0' / 'model.xml'}") and "Saved OpenVINO IR" not in printed
    assert lines[1] == f"in: images float32 [batch, {SIZE}, {SIZE}, 3] (normalized RGB); out: logits float32"


def test_an_existing_folder_is_refused_in_one_line(exported):
    folder, *_ = exported
    run = subprocess.run([sys.executable, "-m", "keras_repvgg", "export", "openvino",
                          str(timm_checkpoint("repvgg_a0", SEED)), "-o", str(folder / "a0")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"keras-repvgg: error: {folder / 'a0'} already exists; choose a new folder"]
