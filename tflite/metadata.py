"""Standard TFLite Metadata: the `TFLITE_METADATA` flatbuffer that MediaPipe Tasks, the TFLite
Task Library and Android Studio's model binding read to learn how to feed a model and what
its outputs mean.

Written with the `flatbuffers` package alone (a TensorFlow dependency): no tflite-support,
which cannot live beside TensorFlow 2.21. The table layouts follow the public metadata schema
(version 1.5, file identifier "M001"); each field is a vtable slot in declaration order, and a
union takes two slots, its type then its value. The file is stored in the model's `metadata`
list under the name TFLITE_METADATA, pointing at a buffer of its own; associated files (the
labels) travel in the zip appended to the model (see `files.attach_files`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from keras_repvgg.core.description import LABELS_FILE
from keras_repvgg.core.heads import meaning, output_name
from keras_repvgg.core.transform import PIXEL_MAX, pixel_mean_std, scale_and_offset

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # image properties, normalization, stats, axis labels: all 1.0 features

# Enum and union values of the schema.
_RGB = 1  # ColorSpaceType
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """An RGB image input: its tensor name, size, and how MediaPipe maps 0-255 pixels onto it
    ((pixel - mean) / std per channel; None where the tensor takes the pixels as they are)."""

    name: str
    size: int
    mean: Optional[Sequence[float]]
    std: Optional[Sequence[float]]
    value_range: tuple[float, float]  # of the values the tensor holds, after normalization


@dataclasses.dataclass(frozen=True)
class ScoresOutput:
    name: str
    description: str
    labels_file: Optional[str]  # an associated file with one label per class, in order


def _strings(builder, *texts: Optional[str]) -> list[Optional[int]]:
    return [builder.CreateString(t) if t is not None else None for t in texts]


def _offsets_vector(builder, offsets: Sequence[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _floats(builder, values: Sequence[float]) -> int:
    return builder.CreateNumpyVector(np.asarray(values, dtype="<f4"))


def _table(builder, fields: dict[int, tuple[str, Optional[int]]]) -> int:
    """A table from {slot: (kind, value)}; kind is "offset" or "ubyte" / "byte" / "uint"."""
    builder.StartObject(max(fields) + 1)
    for slot, (kind, value) in fields.items():
        if value is None:
            continue
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "ubyte":
            builder.PrependUint8Slot(slot, value, 0)
        elif kind == "byte":
            builder.PrependInt8Slot(slot, value, 0)
        else:
            builder.PrependUint32Slot(slot, value, 0)
    return builder.EndObject()


def _image_input(builder, image: ImageInput) -> int:
    name, description = _strings(builder, image.name, "RGB image, batch x height x width x 3")
    size = _table(builder, {0: ("uint", image.size), 1: ("uint", image.size)})  # ImageSize
    properties = _table(builder, {0: ("byte", _RGB), 1: ("offset", size)})  # ImageProperties
    content = _table(builder, {0: ("ubyte", _IMAGE_PROPERTIES), 1: ("offset", properties)})
    units = None
    if image.mean is not None and image.std is not None:
        mean, std = _floats(builder, image.mean), _floats(builder, image.std)
        normalization = _table(builder, {0: ("offset", mean), 1: ("offset", std)})  # NormalizationOptions
        unit = _table(builder, {0: ("ubyte", _NORMALIZATION_OPTIONS), 1: ("offset", normalization)})
        units = _offsets_vector(builder, [unit])
    high, low = _floats(builder, [image.value_range[1]]), _floats(builder, [image.value_range[0]])
    stats = _table(builder, {0: ("offset", high), 1: ("offset", low)})  # Stats: max, min
    return _table(builder, {0: ("offset", name), 1: ("offset", description), 3: ("offset", content),
                            4: ("offset", units), 5: ("offset", stats)})


def _scores_output(builder, output: ScoresOutput) -> int:
    name, description = _strings(builder, output.name, output.description)
    properties = _table(builder, {0: ("offset", None)})  # FeatureProperties: no fields
    content = _table(builder, {0: ("ubyte", _FEATURE_PROPERTIES), 1: ("offset", properties)})
    files = None
    if output.labels_file:
        file_name, file_description = _strings(builder, output.labels_file, "One class name a line, in class order.")
        label_file = _table(builder, {0: ("offset", file_name), 1: ("offset", file_description),
                                      2: ("byte", _TENSOR_AXIS_LABELS)})
        files = _offsets_vector(builder, [label_file])
    return _table(builder, {0: ("offset", name), 1: ("offset", description), 3: ("offset", content),
                            6: ("offset", files)})


def metadata_flatbuffer(
    *, name: str, description: str, version: str, author: str, license: str,
    image: ImageInput, output: ScoresOutput,
) -> bytes:
    """The TFLITE_METADATA flatbuffer of a one-image-in, one-score-vector-out classifier."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    tensor_in = _image_input(builder, image)
    tensor_out = _scores_output(builder, output)
    inputs, outputs = _offsets_vector(builder, [tensor_in]), _offsets_vector(builder, [tensor_out])
    subgraph = _table(builder, {2: ("offset", inputs), 3: ("offset", outputs)})
    subgraphs = _offsets_vector(builder, [subgraph])
    texts = _strings(builder, name, description, version, author, license, MIN_PARSER_VERSION)
    root = _table(builder, {0: ("offset", texts[0]), 1: ("offset", texts[1]), 2: ("offset", texts[2]),
                            3: ("offset", subgraphs), 4: ("offset", texts[3]), 5: ("offset", texts[4]),
                            7: ("offset", texts[5])})
    builder.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def with_metadata(model: bytes, metadata: bytes) -> bytes:
    """The .tflite flatbuffer `model` with `metadata` stored as its TFLITE_METADATA (replacing
    any there). Uses TensorFlow's generated schema code for the model's own flatbuffer."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    tree.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(tree.buffers) - 1
    tree.metadata = [m for m in (tree.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    tree.metadata.append(entry)
    builder = flatbuffers.Builder(len(model) + len(metadata) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_metadata_flatbuffer(model: bytes) -> Optional[bytes]:
    """The TFLITE_METADATA flatbuffer stored in a .tflite model, or None."""
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(model, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() in (METADATA_NAME.encode(), METADATA_NAME):
            return root.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def standard_metadata(description, has_labels: bool, quantization: str, io_dtype: str) -> bytes:
    """The TFLITE_METADATA of an export of the model `description` describes (its head and
    input as in the file)."""
    from keras_repvgg.core.configs import get_variant

    p = description.preprocessing
    if description.takes_pixels:  # 0-255 in: MediaPipe passes the pixels as they are
        mean, std, value_range = [0.0], [1.0], (0.0, PIXEL_MAX)
    else:  # normalized in: MediaPipe computes (pixel - mean) / std with them in 0-255 units
        mean, std = (a.tolist() for a in pixel_mean_std(p))
        scale, offset = scale_and_offset(p)  # pixel 0 becomes offset, pixel 255 255 scale + offset
        value_range = (float(offset.min()), float((PIXEL_MAX * scale + offset).max()))
    head = description.head
    what = meaning(head, description.classifier_activation)
    keras_name = get_variant(description.variant).keras_name
    return metadata_flatbuffer(
        name=f"{keras_name} ({description.variant})",
        description=f"RepVGG image classifier ({quantization}, {io_dtype} input), exported by keras-repvgg. {what}",
        version=description.source or "",
        author="keras-repvgg",
        license=description.license or "",
        image=ImageInput("image", int(p.input_size), mean, std, value_range),
        output=ScoresOutput(output_name(head), what, LABELS_FILE if has_labels else None),
    )
