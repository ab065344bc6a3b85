"""ONNX: Keras' own export (`model.export(format="onnx")`, tf2onnx on TensorFlow; tf2onnx's
`from_function` under tf-keras), run by ONNX Runtime in a fresh process, against timm; the
file's names, dynamic batch and metadata; `keras-repvgg export onnx`. The torch backend's
export is tested in tests/backends/test_backend_onnx.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from keras_repvgg.converters import convert_checkpoint
from keras_repvgg.core.description import LABELS_FILE, METADATA_FILE, from_export_metadata
from keras_repvgg.core.errors import MissingDependencyError
from keras_repvgg.exports.onnx import BATCH, INPUT_NAME, export_onnx, read_onnx_metadata, write_onnx
from keras_repvgg.front.cli import main
from keras_repvgg.models.model import describe

from helpers import (
    KERAS3_ONLY,
    assert_close_to_timm,
    onnx_runtime_outputs,
    random_images,
    timm_checkpoint,
    timm_reference,
    variant_seed,
)

SIZE = 64
SEED = 2  # of the timm models converted here (the TFLite tests' too: the same cached checkpoints)
# B1g4's export takes tf2onnx 18 s and 8.7 GB at its peak (docs/onnx.md, "Memory and time"): the Keras 3 pass
# only; under tf-keras, A0 shows the other route (tf2onnx's from_function) end to end.
ARCHS = ["repvgg_a0", pytest.param("repvgg_b1g4", marks=KERAS3_ONLY)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each variant converted at SIZE and exported once, lazily: the Keras model, the .onnx
    path, and ONNX Runtime's outputs (batch of 3, first image alone) and report, from a fresh process."""
    root = tmp_path_factory.mktemp("onnx")
    cache: dict = {}

    def get(arch: str):
        if arch not in cache:
            model = convert_checkpoint(timm_checkpoint(arch, seed=SEED), input_size=SIZE).model
            path = write_onnx(export_onnx(model), root / f"{arch}.onnx")
            (outputs,), report = onnx_runtime_outputs([path], random_images(3, SIZE, seed=4), root / arch)
            cache[arch] = model, path, outputs, report[path]
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_runtime_matches_timm(exported, arch):
    _, _, (batch, one), _ = exported(arch)
    x = random_images(3, SIZE, seed=4)
    reference = timm_reference(arch, SEED, x)
    error = assert_close_to_timm(batch, reference)
    assert_close_to_timm(one, reference[:1])  # the batch dimension is dynamic: 3, then 1
    print(f"{arch}: max |ONNX Runtime - timm| = {error:.2e} of the logit scale")


def test_names_batch_and_metadata(exported):
    model, path, _, report = exported("repvgg_a0")
    assert report["input"] == [INPUT_NAME, "tensor(float)", [BATCH, SIZE, SIZE, 3]]
    assert report["output"] == ["logits", "tensor(float)", [BATCH, 1000]]
    metadata = report["metadata"]  # as ONNX Runtime reads the file's metadata_props
    assert from_export_metadata(json.loads(metadata[METADATA_FILE])) == describe(model)
    assert LABELS_FILE not in metadata  # the converted checkpoint names no classes
    assert read_onnx_metadata(path.read_bytes()) == metadata
    labels = [f"class {i}" for i in range(1000)]
    stored = read_onnx_metadata(export_onnx(model, labels=labels))
    assert stored[LABELS_FILE].splitlines() == labels


def test_missing_extra_is_one_clear_error(exported, monkeypatch):
    model = exported("repvgg_a0")[0]
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # `import tf2onnx` raises ImportError
    with pytest.raises(MissingDependencyError, match=r"tf2onnx: pip install 'keras-repvgg\[onnx\]'"):
        export_onnx(model)


def test_cli_export_onnx(exported, tmp_path, capsys):
    _, path, _, _ = exported("repvgg_a0")
    out = tmp_path / "a0.onnx"
    assert main(["export", "onnx", str(timm_checkpoint("repvgg_a0", seed=SEED)), "-o", str(out),
                 "--input-size", str(SIZE)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines() == [
        f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)",
        f"in: images float32 [batch, {SIZE}, {SIZE}, 3] (normalized RGB); out: logits float32",
    ]  # nothing of Keras' or tf2onnx's
    assert out.read_bytes() == path.read_bytes()  # another load of the same model: the same bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a0.onnx"]  # no temporary left over

    missing = tmp_path / "missing.keras"
    assert main(["export", "onnx", str(missing), "-o", str(tmp_path / "b.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-repvgg: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "b.onnx").exists()


D2SE_CHILD = r"""
import sys
from keras_repvgg.converters import convert_checkpoint
from keras_repvgg.exports.onnx import export_onnx, write_onnx
model = convert_checkpoint(sys.argv[1], input_size=int(sys.argv[2])).model
write_onnx(export_onnx(model), sys.argv[3])
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_d2se_at_320_matches_timm(tmp_path):
    """D2se (squeeze-excitation, 120M parameters) at its 320 px, exported on Keras' torch backend:
    tf2onnx would need some 20 GB for it (docs/onnx.md, "Memory and time"); torch.onnx takes 4."""
    path = tmp_path / "d2se.onnx"
    # The weights and the input of test_converters_parity's D2se at 320 px (any random model shows the
    # export right): the run makes that 120M-parameter checkpoint and timm's logits at 320 px once.
    seed = variant_seed("repvgg_d2se")
    run = subprocess.run([sys.executable, "-c", D2SE_CHILD, str(timm_checkpoint("repvgg_d2se", seed=seed)), "320",
                          str(path)], env={**os.environ, "KERAS_BACKEND": "torch"}, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    x = random_images(2, 320, seed=1)
    ((batch, one),), report = onnx_runtime_outputs([path], x, tmp_path / "run")
    reference = timm_reference("repvgg_d2se", seed, x)
    error = assert_close_to_timm(batch, reference)
    assert_close_to_timm(one, reference[:1])
    assert report[path]["input"][2] == [BATCH, 320, 320, 3]
    print(f"repvgg_d2se: max |ONNX Runtime - timm| = {error:.2e} of the logit scale")
