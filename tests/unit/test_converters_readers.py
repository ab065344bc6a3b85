"""The counting safetensors reader (numpy only): every key taken or skipped, clear errors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from keras_repvgg.converters.errors import CheckpointError, KeyMismatchError, ShapeMismatchError
from keras_repvgg.converters.readers import SafetensorsReader


def _write(path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file written by hand from the format's description: 8-byte header
    length, JSON header (dtype, shape, data offsets), then the raw little-endian data."""
    header, data, offset = {}, b"", 0
    for key, value in tensors.items():
        raw = np.ascontiguousarray(value, dtype="<f4").tobytes()
        header[key] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        data, offset = data + raw, offset + len(raw)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_values_shapes_and_counting(tmp_path):
    path = tmp_path / "t.safetensors"
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, np.float32)
    _write(path, {"a": a, "b": b, "skipped": np.zeros(1, np.float32)})
    reader = SafetensorsReader(path)
    assert reader.shape("a") == (2, 3) and "b" in reader
    np.testing.assert_array_equal(reader.take("a", (2, 3)), a)
    reader.skip("skipped")
    with pytest.raises(KeyMismatchError, match="'b'"):
        reader.finish()  # 'b' was neither taken nor skipped
    np.testing.assert_array_equal(reader.take("b", (4,)), b)
    reader.finish()


def test_missing_key_and_wrong_shape_name_the_file(tmp_path):
    path = tmp_path / "t.safetensors"
    _write(path, {"a": np.zeros((2, 3), np.float32)})
    reader = SafetensorsReader(path)
    with pytest.raises(ShapeMismatchError, match=r"t\.safetensors.*'a'.*\(3, 2\)"):
        reader.take("a", (3, 2))
    with pytest.raises(KeyMismatchError, match=r"t\.safetensors: missing key 'nope'"):
        reader.take("nope", (1,))


@pytest.mark.parametrize("content, why", [
    (b"", "0 bytes, with no valid header length"),
    (b"\x08\x00\x00\x00\x00\x00\x00\x00not json", "the header is not JSON: Expecting value: line 1 column 1 (char 0)"),
    (b"\xff" * 8, "8 bytes, with no valid header length"),
], ids=["empty", "not-json", "huge-length"])
def test_unreadable_files_are_checkpoint_errors(tmp_path, content, why):
    """Each branch's message in full (tests/unit/test_reader_errors.py has one case per branch)."""
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        SafetensorsReader(path)
    assert type(info.value) is CheckpointError
    assert str(info.value) == f"{path}: not a readable safetensors file ({why})"
