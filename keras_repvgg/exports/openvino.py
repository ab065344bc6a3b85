"""Keras RepVGG -> an OpenVINO IR folder, through Keras' own `model.export(format="openvino")`.

The folder holds `model.xml` and `model.bin` (float32 weights), and beside them the
description every export of ours carries (`keras_repvgg.json`) and the class names
(`labels.txt`), as the SavedModel does. The model takes what the Keras model takes (normalized
NHWC float32, in `images`, the batch dynamic) and gives its output, named for what it holds.
Written atomically: the folder appears whole or not at all.

OpenVINO's CPU plugin computes in bfloat16 by default on CPUs that have it (AVX512_BF16, AMX):
about 1e-3 of the logit scale from timm there, against 3e-7 in float32. Compile with
`{"INFERENCE_PRECISION_HINT": "f32"}` for timm's numbers (docs/onnx.md, "OpenVINO").
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

from keras_repvgg.core.atomic import atomic_path
from keras_repvgg.core.description import LABELS_FILE, METADATA_FILE, export_metadata
from keras_repvgg.core.errors import ExportError, KerasRepVGGError, MissingDependencyError
from keras_repvgg.core.heads import output_name

INPUT_NAME = "images"
MODEL_FILE = "model.xml"  # and model.bin beside it
EXTRA = "pip install 'keras-repvgg[openvino]'"


def new_folder(directory: "str | os.PathLike[str]") -> Path:
    """The folder to write: it must not exist (KerasRepVGGError otherwise)."""
    target = Path(directory)
    if target.exists():
        raise KerasRepVGGError(f"{target} already exists; choose a new folder")
    return target


def export_openvino(model, directory: "str | os.PathLike[str]") -> Path:
    """Write `model` (ours or a RepVGG KerasHub model; deploy or training form, then fused) as an
    OpenVINO IR folder at `directory`, which must not exist. Returns the folder."""
    from keras_repvgg.core.labels import checked_labels
    from keras_repvgg.models.backend import LEGACY_KERAS, keras, require_backend
    from keras_repvgg.models.model import as_keras_model, describe
    from keras_repvgg.models.reparameterization import reparameterize

    if LEGACY_KERAS:
        raise ExportError("OpenVINO export is Keras 3's (model.export(format='openvino')); unset TF_USE_LEGACY_KERAS")
    require_backend("OpenVINO export", ("tensorflow",), "the backend it is tested on", ExportError)
    try:
        import openvino as ov
    except ImportError as err:
        raise MissingDependencyError(f"OpenVINO export needs openvino: {EXTRA} ({err})") from None
    target = new_folder(directory)
    model = as_keras_model(model)
    description = describe(model)
    output = output_name(description.head, f"model {model.name!r}")  # a features_only model fails here
    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ExportError(f"the model's input shape {shape} is not static; build it with an input_shape")
    if description.form == "train":
        model = reparameterize(model)
        description = describe(model)
    labels = checked_labels(description.classes, description.labels) if description.include_top else None
    spec = keras.InputSpec(shape=(None, *shape), dtype="float32", name=INPUT_NAME)
    with atomic_path(target) as tmp, tempfile.TemporaryDirectory(prefix="keras-repvgg-openvino-") as work:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # "Saved OpenVINO IR at ..."
            warnings.simplefilter("ignore")
            model.export(str(Path(work) / MODEL_FILE), format="openvino", input_signature=[spec])
        ir = ov.Core().read_model(str(Path(work) / MODEL_FILE))
        ir.inputs[0].get_tensor().set_names({INPUT_NAME})
        ir.outputs[0].get_tensor().set_names({output})
        tmp.mkdir()
        ov.save_model(ir, str(tmp / MODEL_FILE), compress_to_fp16=False)  # timm's float32 weights
        (tmp / METADATA_FILE).write_text(json.dumps(export_metadata(description), indent=1))
        if labels:
            (tmp / LABELS_FILE).write_text("\n".join(labels) + "\n")
    return target
