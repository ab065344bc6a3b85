"""Tensor readers that keep count: every key is consumed or explicitly skipped.

`take` checks a key's presence, shape and dtype; `finish` raises for whatever
was neither taken nor skipped, so that no weight is ever silently dropped.
Messages name the file, the key (as the file spells it) and both shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .errors import CheckpointError, KeyMismatchError, NonFiniteWeightsError, ShapeMismatchError


class TensorReader:
    """The bookkeeping; subclasses say where tensors come from."""

    allow_nonfinite = False  # NaN or infinity in a weight is almost always a broken file

    def __init__(self, path: Path, shapes: dict[str, tuple[int, ...]]):
        self.path = path
        self._shapes = shapes
        self._used: set[str] = set()

    # --- what a subclass provides
    def _is_float(self, key: str) -> bool:
        raise NotImplementedError

    def _dtype_name(self, key: str) -> str:
        raise NotImplementedError

    def _load(self, key: str) -> np.ndarray:
        raise NotImplementedError

    def display(self, key: str) -> str:
        """The key as the file names it (readers that rename keys override this)."""
        return key

    # --- the shared bookkeeping
    def keys(self) -> set[str]:
        return set(self._shapes)

    def __contains__(self, key: str) -> bool:
        return key in self._shapes

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def take(self, key: str, shape: Iterable[int]) -> np.ndarray:
        """The tensor under `key`, checked against the expected shape, marked as used."""
        shape = tuple(shape)
        if key not in self._shapes:
            raise KeyMismatchError(
                f"{self.path}: missing key {self.display(key)!r} (expected shape {shape})"
            )
        actual = self.shape(key)
        if actual != shape:
            raise ShapeMismatchError(
                f"{self.path}: key {self.display(key)!r} has shape {actual}, expected {shape}"
            )
        if not self._is_float(key):
            raise CheckpointError(
                f"{self.path}: key {self.display(key)!r} has dtype {self._dtype_name(key)}, "
                "expected a float tensor"
            )
        tensor = self._load(key)
        if not self.allow_nonfinite and not np.isfinite(tensor).all():
            bad = int(np.size(tensor) - np.count_nonzero(np.isfinite(tensor)))
            raise NonFiniteWeightsError(
                f"{self.path}: key {self.display(key)!r} holds {bad} NaN or infinite values "
                f"(of {np.size(tensor)}); pass allow_nonfinite=True to convert it anyway"
            )
        self._used.add(key)
        return tensor

    def skip(self, key: str) -> None:
        """Mark a key as deliberately not used (BatchNorm's num_batches_tracked, say)."""
        self._used.add(key)

    def finish(self) -> None:
        left = sorted(set(self._shapes) - self._used)
        if left:
            shown = ", ".join(f"{self.display(k)!r} {self.shape(k)}" for k in left[:5])
            more = f" and {len(left) - 5} more" if len(left) > 5 else ""
            raise KeyMismatchError(f"{self.path}: unexpected keys {shown}{more}")


# safetensors dtype names -> little-endian numpy dtypes. BF16 has no numpy dtype:
# it is read as uint16 and widened to float32 by hand.
_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


class SafetensorsReader(TensorReader):
    """A safetensors file, parsed with numpy alone.

    The format is an 8-byte header length, a JSON header of dtypes, shapes and
    byte ranges, then the data. Each tensor is read with one seek and read, not
    through a memory map, whose pages would count against the process while
    the model is built.
    """

    def __init__(self, path: Path):
        self.path = path
        self._header = self._read_header(path)
        super().__init__(path, {k: tuple(e["shape"]) for k, e in self._header.items()})

    def _fail(self, why: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: not a readable safetensors file ({why})")

    def _read_header(self, path: Path) -> dict[str, dict[str, Any]]:
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                length = int.from_bytes(f.read(8), "little") if size >= 8 else -1
                if not 0 < length <= size - 8:
                    raise self._fail(f"{size} bytes, with no valid header length")
                header = json.loads(f.read(length))
        except CheckpointError:
            raise
        except OSError as err:
            raise CheckpointError(f"{path}: cannot read ({err})") from err
        except (ValueError, UnicodeDecodeError) as err:
            raise self._fail(f"the header is not JSON: {err}") from err
        if not isinstance(header, dict):
            raise self._fail("the header is not a JSON object")
        header.pop("__metadata__", None)
        self._data_start, data_size = 8 + length, size - 8 - length
        for key, entry in header.items():
            try:
                dtype = np.dtype(_DTYPES[entry["dtype"]])
                entry["shape"] = [int(d) for d in entry["shape"]]
                begin, end = entry["data_offsets"] = [int(o) for o in entry["data_offsets"]]  # ints, as _load needs
            except (KeyError, TypeError, ValueError) as err:
                raise self._fail(f"key {key!r} has a malformed entry {entry!r}") from err
            if begin < 0 or min(entry["shape"], default=0) < 0 or end - begin != int(np.prod(entry["shape"])) * dtype.itemsize:
                raise self._fail(f"key {key!r}: byte range {begin}..{end} does not fit its shape")
            if end > data_size:
                raise self._fail(
                    f"truncated: key {key!r} needs {end} data bytes, the file has {data_size}"
                )
        return header

    def _is_float(self, key: str) -> bool:
        return self._header[key]["dtype"] in _FLOAT_DTYPES

    def _dtype_name(self, key: str) -> str:
        return self._header[key]["dtype"]

    def _load(self, key: str) -> np.ndarray:
        entry = self._header[key]
        dtype = np.dtype(_DTYPES[entry["dtype"]])
        begin, end = entry["data_offsets"]
        count = (end - begin) // dtype.itemsize
        raw = np.fromfile(self.path, dtype=dtype, count=count, offset=self._data_start + begin)
        raw = raw.reshape(self.shape(key))
        if entry["dtype"] == "BF16":  # bfloat16 is the top half of a float32
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw


class ArrayReader(TensorReader):
    """Arrays already in memory (from a PyTorch pickle), under timm's key names.

    `display` turns a timm key back into the file's own name for messages.
    """

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], display: Callable[[str], str]):
        self._arrays = arrays
        self._display = display
        super().__init__(path, {k: tuple(a.shape) for k, a in arrays.items()})

    def display(self, key: str) -> str:
        return self._display(key)

    def _is_float(self, key: str) -> bool:
        return np.issubdtype(self._arrays[key].dtype, np.floating)

    def _dtype_name(self, key: str) -> str:
        return str(self._arrays[key].dtype)

    def _load(self, key: str) -> np.ndarray:
        return self._arrays[key]
