"""Keras RepVGG -> .onnx bytes, through Keras' own `model.export(format="onnx")`. A pure
function; `write_onnx` writes the file atomically.

What the file takes and gives is the Keras model's own computation: normalized float32
RGB, batch x size x size x 3 (NHWC, the batch dynamic), in an input named `images`; the
output as the model computes it, named for what it holds (`heads.output_name`: `logits`,
`probabilities`, `scores` or `features`, as in the TFLite file and the SavedModel). The
description (`keras_repvgg.json`, the schema every export carries) and the class names
(`labels.txt`) travel in the model's `metadata_props`.

Keras converts through tf2onnx on TensorFlow and through torch.onnx (its TorchScript
exporter, which takes a dynamic batch) on torch. On JAX it needs jax2onnx, which is not
tested here: refused. tf2onnx and onnx are an optional extra, imported only here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Sequence

from keras_repvgg.core.atomic import atomic_path
from keras_repvgg.core.description import LABELS_FILE, METADATA_FILE, export_metadata
from keras_repvgg.core.errors import ExportError, MissingDependencyError
from keras_repvgg.core.heads import output_name

INPUT_NAME = "images"  # a batch of normalized images, as the SavedModel's (dynamic) batch input
BATCH = "batch"  # the symbolic name of the first dimension of the input and the output
BACKENDS = ("tensorflow", "torch")
EXTRA = "pip install 'keras-repvgg[onnx]'"


def _missing(module: str, err: ImportError) -> MissingDependencyError:
    return MissingDependencyError(f"ONNX export needs {module}: {EXTRA} ({err})")


def _onnx():
    try:
        import onnx
    except ImportError as err:
        raise _missing("onnx", err) from None
    return onnx


def _check_tf2onnx() -> None:
    try:
        import tf2onnx  # noqa: F401
    except ImportError as err:
        raise _missing("tf2onnx", err) from None


def export_onnx(model, *, opset: Optional[int] = None, labels: Optional[Sequence[str]] = None) -> bytes:
    """Convert a Keras RepVGG model to an ONNX model and return its serialized bytes.

    model: a deploy-form model, or a training-form one (then reparameterized first, as for
        the SavedModel); its input height and width must be static.
    opset: the ONNX opset; None takes the converter's default (15 from tf2onnx 1.17 on
        TensorFlow, 20 from torch 2.14's TorchScript exporter).
    labels: the class names stored as `labels.txt`; by default the model's own, else none.

    Keras' exporter runs on the TensorFlow and torch backends; the graph is the same
    computation either way (see docs/onnx.md), but the bytes are the running
    backend's. The same model on the same backend gives the same bytes.
    """
    from keras_repvgg.models.backend import BACKEND, LEGACY_KERAS, keras, require_backend

    require_backend("ONNX export", BACKENDS, "Keras' ONNX export on JAX needs jax2onnx, untested here", ExportError)
    onnx = _onnx()  # names the graph's input and output, stores the metadata
    if BACKEND == "tensorflow":
        _check_tf2onnx()  # Keras converts TensorFlow graphs with it
    from keras_repvgg.core.labels import checked_labels
    from keras_repvgg.models.model import as_keras_model, describe
    from keras_repvgg.models.reparameterization import reparameterize

    model = as_keras_model(model)  # a KerasHub one: ours, the same weights
    description = describe(model)
    output = output_name(description.head, f"model {model.name!r}")  # a features_only model fails here
    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ExportError(f"the model's input shape {shape} is not static; build it with an input_shape")
    if description.form == "train":
        model = reparameterize(model)
        description = describe(model)
    labels = checked_labels(description.classes, labels or description.labels) if description.include_top else None

    with tempfile.TemporaryDirectory(prefix="keras-repvgg-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        if LEGACY_KERAS:
            _export_legacy(model, shape, path, opset)
        else:
            spec = keras.InputSpec(shape=(None, *shape), dtype="float32", name=INPUT_NAME)
            # Keras prints "Saved artifact at ..." and tf2onnx and torch.onnx warn about their
            # own internals (numpy 2, tracing): none of it is for users.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.export(str(path), format="onnx", verbose=False, input_signature=[spec], opset_version=opset)
        proto = onnx.load(str(path))
    _name_input_and_output(proto, output)
    _drop_counters(proto.graph)
    metadata = {METADATA_FILE: json.dumps(export_metadata(description), indent=1)}
    if labels:
        metadata[LABELS_FILE] = "\n".join(labels) + "\n"
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    return proto.SerializeToString(deterministic=True)


def _export_legacy(model, shape: tuple, path: Path, opset: Optional[int]) -> None:
    """tf-keras has no `model.export(format="onnx")`: tf2onnx converts the model's function."""
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, *shape), tf.float32, name=INPUT_NAME)]
    function = tf.function(lambda x: model(x, training=False))
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf2onnx.convert.from_function(function, input_signature=spec, opset=opset, output_path=str(path))


def _name_input_and_output(proto, output: str) -> None:
    """The one input `images` and the one output named for the head, both with the batch
    dimension `batch`: the converters name them after their graphs' tensors (`Identity:0`, `504`)."""
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ExportError(f"the ONNX graph has {len(inputs)} inputs and {len(graph.output)} outputs; expected one each")
    renames = {inputs[0].name: INPUT_NAME, graph.output[0].name: output}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = renames.get(value.name, value.name)
    for value in (inputs[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH


def _drop_counters(graph) -> None:
    """Names without the converter's process-wide counters (tf2onnx's `Conv__94` is `Conv__199` in
    the next export), numbered in graph order instead: the same model gives the same bytes."""
    import re

    renames: dict[str, str] = {}
    taken: set[str] = set()

    def canonical(name: str) -> str:
        if name not in renames:
            base = re.sub(r"__\d+", "", name)
            stem, port = re.fullmatch(r"(.*?)(:\d+)?", base).groups()  # type: ignore[union-attr]
            new, k = base, 0
            while new in taken:
                k += 1
                new = f"{stem}__{k}{port or ''}"
            renames[name] = new
            taken.add(new)
        return renames[name]

    graph.doc_string = ""  # tf2onnx's names the traced function, counter and all
    kept = [v.name for v in (*graph.input, *graph.output)]
    for name in kept:  # the input's and the output's names stay as they are
        renames[name] = name
        taken.add(name)
    for tensor in graph.initializer:
        tensor.name = canonical(tensor.name)
    for node in graph.node:
        node.name = canonical(node.name) if node.name else ""
        node.input[:] = [canonical(n) if n else n for n in node.input]
        node.output[:] = [canonical(n) for n in node.output]
    for value in graph.value_info:
        value.name = canonical(value.name)


def write_onnx(data: bytes, path: "str | os.PathLike[str]") -> Path:
    """Write .onnx bytes atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def read_onnx_metadata(data: bytes) -> dict[str, str]:
    """The file's `metadata_props` as a dict (`keras_repvgg.json`, `labels.txt`)."""
    return {p.key: p.value for p in _onnx().load_from_string(data).metadata_props}
