"""Every error branch of the counting safetensors reader (`converters/readers.py`), one fixed
case each: the exception's type and its whole message (the file, the key, and the values the
branch reports). numpy alone; files are written byte by byte from the format's description
(8-byte little-endian header length, JSON header, data), so that each can be broken exactly."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from keras_repvgg.converters.errors import (
    CheckpointError,
    KeyMismatchError,
    NonFiniteWeightsError,
    ShapeMismatchError,
)
from keras_repvgg.converters.readers import ArrayReader, SafetensorsReader


def _raw(header: "dict | bytes", data: bytes = b"", length: "int | None" = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def _write(path, header: "dict | bytes", data: bytes = b"", length: "int | None" = None):
    path.write_bytes(_raw(header, data, length))
    return path


def _f32(tensors: dict[str, np.ndarray]) -> tuple[dict, bytes]:
    """A well-formed header and data for float32 tensors, in order."""
    header, data = {}, b""
    for key, value in tensors.items():
        raw = np.ascontiguousarray(value, "<f4").tobytes()
        header[key] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def _error(path, kind: type = CheckpointError) -> CheckpointError:
    """The error opening `path` raises: exactly of type `kind`, not merely a subclass."""
    with pytest.raises(CheckpointError) as info:
        SafetensorsReader(path)
    assert type(info.value) is kind, repr(info.value)
    return info.value


def _unreadable(path, why: str) -> str:
    return f"{path}: not a readable safetensors file ({why})"


# --- the header length ---------------------------------------------------------------------

@pytest.mark.parametrize("content", [
    b"",  # empty: no length at all
    b"\x02\x00\x00\x00\x00\x00\x00",  # 7 bytes: a length cut short
    _raw(b"{}", length=0),  # a zero-length header
    _raw(b"{}", length=3),  # one byte past the end of the file
    _raw(b"{}", length=2**64 - 1),  # the largest length the 8 bytes hold
], ids=["empty", "7-bytes", "zero-length", "one-past-the-end", "huge"])
def test_a_header_length_outside_the_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    err = _error(path)
    assert str(err) == _unreadable(path, f"{len(content)} bytes, with no valid header length")


def test_a_header_that_fills_the_file_exactly_is_read(tmp_path):
    """The boundary of the branch above: a length up to the file's end is valid."""
    path = _write(tmp_path / "t.safetensors", {"__metadata__": {"format": "pt"}})
    reader = SafetensorsReader(path)
    assert reader.keys() == set()  # __metadata__ is not a tensor
    reader.finish()


# --- the file itself -------------------------------------------------------------------------

def test_a_missing_file_and_a_folder_cannot_be_read(tmp_path):
    missing = tmp_path / "missing.safetensors"
    err = _error(missing)
    assert str(err).startswith(f"{missing}: cannot read ([Errno 2] ") and str(err).endswith(")")
    assert isinstance(err.__cause__, FileNotFoundError)
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    err = _error(folder)
    assert str(err).startswith(f"{folder}: cannot read (") and isinstance(err.__cause__, IsADirectoryError)


# --- the JSON header -------------------------------------------------------------------------

@pytest.mark.parametrize("header, cause", [
    (b"{not json}", json.JSONDecodeError),
    (b"{\"a\": 1,", json.JSONDecodeError),  # cut short
    (b"{\"a\xff\": 1}", UnicodeDecodeError),  # not UTF-8
], ids=["not-json", "cut-short", "not-utf8"])
def test_a_header_that_is_not_json(tmp_path, header, cause):
    path = _write(tmp_path / "bad.safetensors", header)
    err = _error(path)
    assert isinstance(err.__cause__, cause)
    assert str(err) == _unreadable(path, f"the header is not JSON: {err.__cause__}")


@pytest.mark.parametrize("header", [b"[]", b"[{\"dtype\": \"F32\"}]", b"null", b"\"F32\"", b"42"])
def test_a_header_that_is_not_a_json_object(tmp_path, header):
    path = _write(tmp_path / "bad.safetensors", header)
    assert str(_error(path)) == _unreadable(path, "the header is not a JSON object")


# --- one tensor's entry ----------------------------------------------------------------------

GOOD = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}


@pytest.mark.parametrize("entry, cause", [
    ({"shape": [2, 3], "data_offsets": [0, 24]}, KeyError),  # no dtype
    ({"dtype": "F32", "data_offsets": [0, 24]}, KeyError),  # no shape
    ({"dtype": "F32", "shape": [2, 3]}, KeyError),  # no offsets
    ({**GOOD, "shape": 6}, TypeError),
    ({**GOOD, "shape": None}, TypeError),
    ({**GOOD, "shape": ["two", 3]}, ValueError),
    ({**GOOD, "data_offsets": [24]}, ValueError),
    ({**GOOD, "data_offsets": [0, 12, 24]}, ValueError),
    ({**GOOD, "data_offsets": None}, TypeError),
    ({**GOOD, "data_offsets": ["0", "x"]}, ValueError),
    ("F32", TypeError),  # an entry that is not an object
    ([0, 24], TypeError),
    (None, TypeError),
], ids=["no-dtype", "no-shape", "no-offsets", "shape-int", "shape-null", "shape-text", "one-offset",
        "three-offsets", "offsets-null", "offsets-text", "entry-text", "entry-list", "entry-null"])
def test_a_malformed_entry(tmp_path, entry, cause):
    path = _write(tmp_path / "bad.safetensors", {"ok": GOOD, "w": entry}, bytes(24))
    err = _error(path)
    assert isinstance(err.__cause__, cause)
    assert str(err) == _unreadable(path, f"key 'w' has a malformed entry {entry!r}")


@pytest.mark.parametrize("dtype", ["F8_E4M3", "F8_E5M2", "U16", "U32", "U64", "C64", "f32", "float32", ""])
def test_an_unknown_dtype(tmp_path, dtype):
    """Not in the reader's table (some are valid safetensors dtypes it does not read): refused
    when the file is opened, naming the key and the entry with its dtype."""
    entry = {"dtype": dtype, "shape": [2], "data_offsets": [0, 8]}
    path = _write(tmp_path / "bad.safetensors", {"w": entry}, bytes(8))
    err = _error(path)
    assert isinstance(err.__cause__, KeyError) and err.__cause__.args == (dtype,)
    assert str(err) == _unreadable(path, f"key 'w' has a malformed entry {entry!r}")
    assert f"'dtype': {dtype!r}" in str(err)


# --- byte ranges -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, shape, offsets", [
    ("F32", [2, 3], [0, 20]),  # 20 bytes for 24
    ("F32", [2, 3], [0, 28]),  # 28 bytes for 24
    ("F16", [2, 3], [0, 24]),  # F32's count for F16's 12 bytes
    ("F64", [2, 3], [0, 24]),  # and for F64's 48
    ("F32", [2, 3], [-4, 20]),  # the right count, starting before the data
    ("F32", [2, 3], [24, 0]),  # reversed
    ("F32", [], [0, 8]),  # a scalar is one element
    ("F32", [0, 3], [0, 4]),  # an empty tensor has no bytes
    ("F32", [-2, -2], [0, 16]),  # negative sizes whose product fits (it crashed the head's build)
    ("F32", [-1], [4, 0]),  # a negative size and reversed offsets that agree
], ids=["short", "long", "f16", "f64", "negative-begin", "reversed", "scalar", "empty", "negative-sizes",
        "negative-reversed"])
def test_a_byte_range_that_does_not_fit_the_shape(tmp_path, dtype, shape, offsets):
    path = _write(tmp_path / "bad.safetensors", {"w": {"dtype": dtype, "shape": shape, "data_offsets": offsets}},
                  bytes(64))
    begin, end = offsets
    assert str(_error(path)) == _unreadable(path, f"key 'w': byte range {begin}..{end} does not fit its shape")


def test_offsets_written_as_floats_are_read_as_integers(tmp_path):
    """JSON `8.0` for `8`: read as the integer it is (the reader once checked int(8.0) but then
    seeked with the float, a raw TypeError)."""
    w = np.arange(6.0).reshape(2, 3)
    path = _write(tmp_path / "t.safetensors", {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0.0, 24.0]}},
                  np.asarray(w, "<f4").tobytes())
    np.testing.assert_array_equal(SafetensorsReader(path).take("w", (2, 3)), w)


@pytest.mark.parametrize("missing", [1, 4, 24])
def test_data_cut_short_is_truncated(tmp_path, missing):
    header, data = _f32({"a": np.ones(2), "w": np.ones((2, 3))})  # 'w' needs data bytes 8..32
    path = _write(tmp_path / "cut.safetensors", header, data[: len(data) - missing])
    assert str(_error(path)) == _unreadable(
        path, f"truncated: key 'w' needs 32 data bytes, the file has {32 - missing}"
    )


def test_a_tensor_that_ends_at_the_file_end_is_read(tmp_path):
    """The boundary of the branch above, and the values read back exactly."""
    a, w = np.arange(2.0), np.arange(6.0).reshape(2, 3)
    path = _write(tmp_path / "t.safetensors", *_f32({"a": a, "w": w}))
    reader = SafetensorsReader(path)
    np.testing.assert_array_equal(reader.take("w", (2, 3)), w)
    np.testing.assert_array_equal(reader.take("a", (2,)), a)
    reader.finish()


# --- take: key, shape, dtype, values ---------------------------------------------------------

def test_take_a_missing_key_names_the_expected_shape(tmp_path):
    path = _write(tmp_path / "t.safetensors", *_f32({"w": np.ones((2, 3))}))
    with pytest.raises(KeyMismatchError) as info:
        SafetensorsReader(path).take("stem.conv.weight", [48, 3, 3, 3])
    assert str(info.value) == f"{path}: missing key 'stem.conv.weight' (expected shape (48, 3, 3, 3))"


@pytest.mark.parametrize("expected", [(3, 2), (6,), (2, 3, 1), ()])
def test_take_a_wrong_shape_names_both(tmp_path, expected):
    path = _write(tmp_path / "t.safetensors", *_f32({"w": np.ones((2, 3))}))
    reader = SafetensorsReader(path)
    with pytest.raises(ShapeMismatchError) as info:
        reader.take("w", expected)
    assert str(info.value) == f"{path}: key 'w' has shape (2, 3), expected {expected}"
    with pytest.raises(KeyMismatchError, match=r": unexpected keys 'w' \(2, 3\)$"):
        reader.finish()  # a refused tensor is not counted as used


@pytest.mark.parametrize("dtype, numpy_dtype", [
    ("I64", "<i8"), ("I32", "<i4"), ("I16", "<i2"), ("I8", "i1"), ("U8", "u1"), ("BOOL", "?"),
])
def test_take_an_integer_or_bool_tensor_is_refused(tmp_path, dtype, numpy_dtype):
    """The file opens (the dtype is known), but `take` refuses a non-float tensor, and only
    after its shape matched."""
    data = np.arange(6).astype(numpy_dtype).tobytes()
    path = _write(tmp_path / "int.safetensors",
                  {"w": {"dtype": dtype, "shape": [2, 3], "data_offsets": [0, len(data)]}}, data)
    reader = SafetensorsReader(path)
    with pytest.raises(ShapeMismatchError):
        reader.take("w", (3, 2))
    with pytest.raises(CheckpointError) as info:
        reader.take("w", (2, 3))
    assert type(info.value) is CheckpointError
    assert str(info.value) == f"{path}: key 'w' has dtype {dtype}, expected a float tensor"
    with pytest.raises(KeyMismatchError, match=r"unexpected keys 'w' \(2, 3\)$"):
        reader.finish()


def test_the_real_librarys_files_agree_on_dtype_names(tmp_path):
    """safetensors' own numpy writer: its float tensors read back exactly, its integer one is
    refused under its name (so that the reader's dtype table matches the library's)."""
    from safetensors.numpy import save_file

    tensors = {"f64": np.linspace(-1, 1, 6).reshape(2, 3), "f32": np.arange(4, dtype=np.float32),
               "f16": np.array([0.1, -2.5, 65504], np.float16), "i32": np.arange(3, dtype=np.int32)}
    path = tmp_path / "lib.safetensors"
    save_file(tensors, str(path))
    reader = SafetensorsReader(path)
    for key in ("f64", "f32", "f16"):
        got = reader.take(key, tensors[key].shape)
        assert got.dtype == tensors[key].dtype and np.array_equal(got, tensors[key]), key
    with pytest.raises(CheckpointError, match=r"key 'i32' has dtype I32, expected a float tensor$"):
        reader.take("i32", (3,))


def test_bfloat16_is_widened_exactly(tmp_path):
    """bfloat16 is the top half of a float32: the reader widens the bits, NaN included."""
    values = np.array([1.0, -2.5, 3.140625, 0.0, 2.0**-126, -3.3895314e38], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    assert np.array_equal((bits.astype(np.uint32) << 16).view(np.float32), values)  # exact in bf16
    path = _write(tmp_path / "bf16.safetensors", {"w": {"dtype": "BF16", "shape": [6], "data_offsets": [0, 12]}},
                  bits.tobytes())
    got = SafetensorsReader(path).take("w", (6,))
    assert got.dtype == np.float32 and np.array_equal(got, values)
    nan = np.array([0x7FC0, 0x3F80], "<u2")  # NaN, 1.0
    path = _write(tmp_path / "bf16_nan.safetensors", {"w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}},
                  nan.tobytes())
    with pytest.raises(NonFiniteWeightsError, match=r"key 'w' holds 1 NaN or infinite values \(of 2\)"):
        SafetensorsReader(path).take("w", (2,))


@pytest.mark.parametrize("dtype", ["F32", "F16", "F64"])
def test_nonfinite_values_are_refused_unless_allowed(tmp_path, dtype):
    numpy_dtype = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dtype]
    values = np.array([[1, np.nan, 2], [np.inf, -np.inf, 3]], numpy_dtype)
    data = values.tobytes()
    path = _write(tmp_path / "nan.safetensors", {"w": {"dtype": dtype, "shape": [2, 3], "data_offsets": [0, len(data)]},
                                                 "b": {"dtype": dtype, "shape": [0], "data_offsets": [len(data)] * 2}},
                  data)
    reader = SafetensorsReader(path)
    with pytest.raises(NonFiniteWeightsError) as info:
        reader.take("w", (2, 3))
    assert str(info.value) == (f"{path}: key 'w' holds 3 NaN or infinite values (of 6); "
                               "pass allow_nonfinite=True to convert it anyway")
    assert reader.take("b", (0,)).shape == (0,)  # nothing to check in an empty tensor
    with pytest.raises(KeyMismatchError, match=r"unexpected keys 'w' \(2, 3\)$"):
        reader.finish()  # refused, so not used
    reader.allow_nonfinite = True
    np.testing.assert_array_equal(reader.take("w", (2, 3)), values)
    reader.finish()


# --- finish: what was neither taken nor skipped ----------------------------------------------

def test_finish_names_the_keys_left_five_at_most(tmp_path):
    tensors = {f"k{i}": np.ones(i + 1) for i in range(8)}
    path = _write(tmp_path / "t.safetensors", *_f32(tensors))
    reader = SafetensorsReader(path)
    reader.take("k0", (1,))
    with pytest.raises(KeyMismatchError) as info:
        reader.finish()
    assert str(info.value) == (f"{path}: unexpected keys 'k1' (2,), 'k2' (3,), 'k3' (4,), 'k4' (5,), "
                               "'k5' (6,) and 2 more")
    for key in ("k1", "k2", "k3", "k4", "k5"):
        reader.skip(key)
    with pytest.raises(KeyMismatchError) as info:
        reader.finish()
    assert str(info.value) == f"{path}: unexpected keys 'k6' (7,), 'k7' (8,)"
    reader.skip("k6")
    reader.take("k7", (8,))
    reader.finish()


def test_array_reader_names_keys_as_its_file_does(tmp_path):
    """A reader of renamed keys (an official .pth) reports the file's own names."""
    path = tmp_path / "official.pth"
    official = {"stem.conv.weight": "stage0.rbr_dense.conv.weight", "head.fc.weight": "linear.weight",
                "stages.0.0.conv_kxk.conv.weight": "stage1.0.rbr_dense.conv.weight"}
    arrays = {"stem.conv.weight": np.zeros((4, 3, 3, 3), np.float32), "head.fc.weight": np.zeros((2, 4), np.int64),
              "stages.0.0.conv_kxk.conv.weight": np.full((1,), np.nan, np.float32)}
    reader = ArrayReader(path, arrays, official.__getitem__)
    with pytest.raises(ShapeMismatchError) as info:
        reader.take("stem.conv.weight", (8, 3, 3, 3))
    assert str(info.value) == f"{path}: key 'stage0.rbr_dense.conv.weight' has shape (4, 3, 3, 3), expected (8, 3, 3, 3)"
    with pytest.raises(CheckpointError) as info:
        reader.take("head.fc.weight", (2, 4))
    assert str(info.value) == f"{path}: key 'linear.weight' has dtype int64, expected a float tensor"
    with pytest.raises(NonFiniteWeightsError, match=r"key 'stage1\.0\.rbr_dense\.conv\.weight' holds 1 NaN"):
        reader.take("stages.0.0.conv_kxk.conv.weight", (1,))
    with pytest.raises(KeyMismatchError) as info:
        reader.finish()
    assert str(info.value) == (f"{path}: unexpected keys 'linear.weight' (2, 4), "
                               "'stage1.0.rbr_dense.conv.weight' (1,), 'stage0.rbr_dense.conv.weight' (4, 3, 3, 3)")
