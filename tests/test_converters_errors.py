"""Bad checkpoints end in a clear error that names the file and key, and write nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.numpy import load_file, save_file

from keras_repvgg.converters import (
    CheckpointError,
    KeyMismatchError,
    ShapeMismatchError,
    convert,
)
from keras_repvgg.front.cli import main

from helpers import make_timm_model, reparameterized, save_checkpoint


def _run_cli(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def test_b1_converted_as_b2_names_key_and_shapes(tmp_path, capsys):
    path = save_checkpoint(reparameterized(make_timm_model("repvgg_b1")), tmp_path / "b1.safetensors")
    out = tmp_path / "out.keras"
    code, err = _run_cli(["convert", str(path), "--arch", "repvgg_b2", "-o", str(out)], capsys)
    assert code == 2
    assert "stages.0.0.reparam_conv.weight" in err
    assert "(128, 64, 3, 3)" in err and "(160, 64, 3, 3)" in err
    assert str(path) in err
    assert not out.exists() and list(tmp_path.iterdir()) == [path]
    with pytest.raises(ShapeMismatchError):
        convert(path, "repvgg_b2")


def test_removed_key_is_named(a0_checkpoints, tmp_path, capsys):
    tensors = load_file(str(a0_checkpoints["train"]))
    del tensors["stages.1.2.conv_1x1.bn.running_var"]
    path = tmp_path / "removed.safetensors"
    save_file(tensors, str(path))
    out = tmp_path / "out.keras"
    code, err = _run_cli(["convert", str(path), "-o", str(out)], capsys)
    assert code == 2 and not out.exists()
    assert "missing key 'stages.1.2.conv_1x1.bn.running_var'" in err and "(96,)" in err
    with pytest.raises(KeyMismatchError, match="stages.1.2.conv_1x1.bn.running_var"):
        convert(path, "repvgg_a0")


def test_renamed_key_is_named(a0_checkpoints, tmp_path):
    tensors = load_file(str(a0_checkpoints["fused"]))
    tensors["stages.2.3.reparam_conv.kernel"] = tensors.pop("stages.2.3.reparam_conv.weight")
    path = tmp_path / "renamed.safetensors"
    save_file(tensors, str(path))
    # With the fused weight gone the block reads as training form, whose keys are missing.
    with pytest.raises(KeyMismatchError, match=r"stages\.2\.3\."):
        convert(path, "repvgg_a0")


def test_extra_key_is_refused(a0_checkpoints, tmp_path):
    tensors = load_file(str(a0_checkpoints["fused"]))
    tensors["stages.0.0.extra.weight"] = tensors["head.fc.bias"]
    path = tmp_path / "extra.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(KeyMismatchError, match=r"unexpected keys 'stages\.0\.0\.extra\.weight' \(1000,\)"):
        convert(path, "repvgg_a0")


def test_integer_tensor_is_refused(a0_checkpoints, tmp_path):
    tensors = load_file(str(a0_checkpoints["fused"]))
    tensors["head.fc.bias"] = tensors["head.fc.bias"].astype("int32")
    path = tmp_path / "int.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"'head\.fc\.bias' has dtype I32"):
        convert(path, "repvgg_a0")


def test_truncated_file(a0_checkpoints, tmp_path, capsys):
    data = a0_checkpoints["fused"].read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.keras"
    code, err = _run_cli(["convert", str(path), "-o", str(out)], capsys)
    assert code == 2 and not out.exists()
    assert err.startswith(f"keras-repvgg: error: {path}: ") and err.count("\n") == 1, err
    assert "truncated: key" in err, err  # the header survives a cut at half the file
    with pytest.raises(CheckpointError):
        convert(path)


@pytest.mark.parametrize("content", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00not json"])
def test_empty_or_corrupt_header(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        convert(path)


def test_folder_without_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no model.safetensors in this folder"):
        convert(tmp_path)


def test_config_naming_another_architecture(a0_checkpoints, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(a0_checkpoints["fused"].read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet50"}))
    with pytest.raises(CheckpointError, match="'resnet50', which is not a RepVGG variant"):
        convert(tmp_path)


def test_unrecognised_shapes_ask_for_arch(a0_checkpoints, tmp_path):
    tensors = load_file(str(a0_checkpoints["fused"]))
    del tensors["stages.2.13.reparam_conv.weight"], tensors["stages.2.13.reparam_conv.bias"]
    path = tmp_path / "short.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="match no known RepVGG variant"):
        convert(path)


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        convert(tmp_path / "nothing.safetensors")


def test_hub_id_absent_from_offline_cache(tmp_path):
    out = tmp_path / "out.keras"
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "keras_repvgg", "convert", "timm/repvgg_a0.rvgg_in1k", "-o", str(out)],
        env={**__import__("os").environ, **env},
        capture_output=True,
        text=True,
        timeout=300,  # measured 14 s; a hang (a network wait despite HF_HUB_OFFLINE) fails, not blocks
    )
    assert proc.returncode == 2
    assert "timm/repvgg_a0.rvgg_in1k" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
