"""Facts with one owner each (numpy only): the output name per head, a model's labels as its
checkpoint states them, and a path's kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from keras_repvgg.converters.sources import Checkpoint, checkpoint_labels
from keras_repvgg.core.artifacts import ArtifactKind, file_kind, kind_by_name
from keras_repvgg.core.description import ModelDescription, export_metadata, from_export_metadata
from keras_repvgg.core.errors import ArtifactError, HeadNotExportableError
from keras_repvgg.core.heads import HEADS, OUTPUT_NAMES, head_of, output_name, served_outputs
from keras_repvgg.core.labels import class_names, imagenet_labels


def test_every_head_but_the_five_maps_has_one_exported_name():
    assert set(OUTPUT_NAMES) == set(HEADS) - {"feature_maps"}
    assert output_name("feature_map") == output_name("pooled") == "features"
    assert served_outputs("logits") == ["logits", "probabilities"]  # the SavedModel adds the softmax
    assert served_outputs("feature_map") == ["features"]
    with pytest.raises(HeadNotExportableError, match="model 'x' outputs feature maps"):
        output_name("feature_maps", "model 'x'")
    assert [head_of(True, a, None, False) for a in ("softmax", None, "linear", "sigmoid")] == \
        ["probabilities", "logits", "logits", "scores"]
    assert (head_of(False, None, "avg", False), head_of(False, None, None, False)) == ("pooled", "feature_map")


def _checkpoint(config: dict) -> Checkpoint:
    return Checkpoint(Path("/nowhere/model.safetensors"), config)


def test_labels_are_what_the_checkpoint_states():
    timm_in1k = {"pretrained_cfg": {"tag": "rvgg_in1k", "num_classes": 1000}}
    assert checkpoint_labels(_checkpoint(timm_in1k), "/nowhere/a0", 1000) == imagenet_labels()
    # A 1000-class head alone says nothing about its classes.
    assert checkpoint_labels(_checkpoint({}), "/nowhere/a0.safetensors", 1000) is None
    assert checkpoint_labels(_checkpoint({"pretrained_cfg": {"tag": "my_birds"}}), "x", 1000) is None
    # timm's hub id names the dataset where no config does; another owner's does not count.
    assert checkpoint_labels(_checkpoint({}), "timm/repvgg_a0.rvgg_in1k", 1000) == imagenet_labels()
    assert checkpoint_labels(_checkpoint({}), "me/repvgg_a0.rvgg_in1k", 1000) is None
    # An in1k tag on a head of another size: not ImageNet's classes.
    assert checkpoint_labels(_checkpoint(timm_in1k), "x", 10) is None
    named = {**timm_in1k, "label_names": ["a", "b"]}
    assert checkpoint_labels(_checkpoint(named), "x", 2) == ["a", "b"]
    with pytest.raises(ValueError, match="2 label names for a 3-class model"):
        checkpoint_labels(_checkpoint(named), "x", 3)
    assert class_names(1000)[:2] == ["0", "1"]  # never ImageNet's by count


def test_old_descriptions_keep_the_labels_they_meant():
    new = ModelDescription("repvgg_a0", classes=1000)
    assert new.labels is None and ModelDescription.from_dict(new.to_dict()) == new
    assert from_export_metadata(export_metadata(new)) == new
    old = {k: v for k, v in new.to_dict().items() if k != "description_version"}  # written before labels were explicit
    assert ModelDescription.from_dict(old).labels == tuple(imagenet_labels())
    assert from_export_metadata({**old, "head": "probabilities", "input": "normalized"}).labels == tuple(imagenet_labels())
    assert ModelDescription.from_dict({**old, "classes": 10}).labels is None


def test_a_path_has_one_kind(tmp_path):
    assert kind_by_name("gs://bucket/a0.keras") is ArtifactKind.KERAS
    assert kind_by_name("a0.weights.h5") is ArtifactKind.KERAS_WEIGHTS
    assert kind_by_name("timm/repvgg_a0.rvgg_in1k") is None
    assert file_kind("missing.tflite") is ArtifactKind.TFLITE
    assert file_kind("timm/repvgg_a0.rvgg_in1k") is ArtifactKind.CHECKPOINT
    (tmp_path / "serving" / "3").mkdir(parents=True)
    (tmp_path / "serving" / "3" / "saved_model.pb").write_bytes(b"")
    assert file_kind(tmp_path / "serving") is ArtifactKind.SAVEDMODEL
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "model.safetensors").write_bytes(b"")
    assert file_kind(tmp_path / "hub") is ArtifactKind.CHECKPOINT
    (tmp_path / "preset").mkdir()
    (tmp_path / "preset" / "model.weights.h5").write_bytes(b"")
    assert file_kind(tmp_path / "preset") is ArtifactKind.PRESET
    (tmp_path / "a0.onnx").write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"a0.onnx: unknown kind of file '.onnx'; expected a .keras file, "
                                            r"a .weights.h5 file, a .tflite file, a SavedModel folder, a checkpoint .* "
                                            r"or a KerasHub preset folder"):
        file_kind(tmp_path / "a0.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="empty: a folder with none of saved_model.pb .*, model.safetensors .* "
                                            "or model.weights.h5"):
        file_kind(tmp_path / "empty")
    with pytest.raises(ArtifactError, match=r"a0.tflite is a .tflite file; expected a .keras file or a checkpoint"):
        file_kind("a0.tflite", (ArtifactKind.KERAS, ArtifactKind.CHECKPOINT))
