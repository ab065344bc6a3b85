"""Finding a checkpoint: a .safetensors file, a folder with config.json, or a hub id.

Reading is lazy, one tensor at a time, so that a conversion never holds the
whole checkpoint and the whole model at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from .errors import CheckpointError, KeyMismatchError, ShapeMismatchError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_HUB_ID = re.compile(r"^(hf[-_]hub:)?[A-Za-z0-9][\w.-]*/[\w.-]+$")


# safetensors dtype names -> little-endian numpy dtypes. BF16 has no numpy dtype:
# it is read as uint16 and widened to float32 by hand.
_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


class TensorReader:
    """Reads the tensors of one safetensors file and keeps count of which were used.

    The format is an 8-byte header length, a JSON header of dtypes, shapes and
    byte ranges, then the data. We parse it with numpy alone and read each
    tensor with one seek and read (no memory map, whose pages would count
    against the process while the model is built). Every key must be consumed
    (`take`) or explicitly skipped (`skip`); `finish` raises for whatever is
    left, so that no weight is silently dropped.
    """

    def __init__(self, path: Path):
        self.path = path
        self._header = self._read_header(path)
        self._keys = set(self._header)
        self._used: set[str] = set()

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
                shape = tuple(int(d) for d in entry["shape"])
                begin, end = (int(o) for o in entry["data_offsets"])
            except (KeyError, TypeError, ValueError) as err:
                raise self._fail(f"key {key!r} has a malformed entry {entry!r}") from err
            if end - begin != int(np.prod(shape)) * dtype.itemsize or begin < 0:
                raise self._fail(f"key {key!r}: byte range {begin}..{end} does not fit shape {shape}")
            if end > data_size:
                raise self._fail(
                    f"truncated: key {key!r} needs {end} data bytes, the file has {data_size}"
                )
        return header

    def keys(self) -> set[str]:
        return set(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._header[key]["shape"])

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

    def take(self, key: str, shape: Iterable[int]) -> np.ndarray:
        """The tensor under `key`, checked against the expected shape, marked as used."""
        shape = tuple(shape)
        if key not in self._keys:
            raise KeyMismatchError(f"{self.path}: missing key {key!r} (expected shape {shape})")
        actual = self.shape(key)
        if actual != shape:
            raise ShapeMismatchError(
                f"{self.path}: key {key!r} has shape {actual}, expected {shape}"
            )
        dtype = self._header[key]["dtype"]
        if dtype not in _FLOAT_DTYPES:
            raise CheckpointError(
                f"{self.path}: key {key!r} has dtype {dtype}, expected a float tensor"
            )
        tensor = self._load(key)
        self._used.add(key)
        return tensor

    def skip(self, key: str) -> None:
        """Mark a key as deliberately not used (BatchNorm's num_batches_tracked, say)."""
        self._used.add(key)

    def finish(self) -> None:
        left = sorted(self._keys - self._used)
        if left:
            shown = ", ".join(f"{k!r} {self.shape(k)}" for k in left[:5])
            more = f" and {len(left) - 5} more" if len(left) > 5 else ""
            raise KeyMismatchError(f"{self.path}: unexpected keys {shown}{more}")


@dataclasses.dataclass
class Checkpoint:
    weights_path: Path
    config: dict[str, Any]  # timm's config.json, or {} where there is none

    def reader(self) -> TensorReader:
        return TensorReader(self.weights_path)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable JSON config ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(config).__name__}")
    return config


def _from_folder(folder: Path) -> Checkpoint:
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} in this folder (found: {found})")
    config_path = folder / CONFIG_NAME
    config = _read_config(config_path) if config_path.is_file() else {}
    return Checkpoint(weights, config)


def _from_hub(repo_id: str) -> Checkpoint:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    repo_id = re.sub(r"^hf[-_]hub:", "", repo_id)
    try:
        weights = Path(hf_hub_download(repo_id, WEIGHTS_NAME))
    except LocalEntryNotFoundError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "it is not in the local hub cache and HF_HUB_OFFLINE is set" if offline else str(err)
        raise CheckpointError(f"hub id {repo_id!r}: cannot get {WEIGHTS_NAME}: {why}") from err
    except (EntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        raise CheckpointError(f"hub id {repo_id!r}: cannot get {WEIGHTS_NAME} ({err})") from err
    try:
        config = _read_config(Path(hf_hub_download(repo_id, CONFIG_NAME)))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        config = {}
    except (HfHubHTTPError, OSError) as err:
        raise CheckpointError(f"hub id {repo_id!r}: cannot get {CONFIG_NAME} ({err})") from err
    return Checkpoint(weights, config)


def resolve_source(source: "str | os.PathLike[str]") -> Checkpoint:
    """Find the checkpoint that SOURCE names: a file, a folder or a hub id."""
    path = Path(source)
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(
                f"{path}: unsupported checkpoint format {path.suffix or '(no suffix)'!r}; "
                "expected a .safetensors file"
            )
        # A hub snapshot or save_for_hf folder keeps its config beside model.safetensors.
        sibling = path.with_name(CONFIG_NAME)
        use_config = path.name == WEIGHTS_NAME and sibling.is_file()
        return Checkpoint(path, _read_config(sibling) if use_config else {})
    if _HUB_ID.match(str(source)) and not str(source).startswith((".", "/")):
        return _from_hub(str(source))
    raise CheckpointError(f"{source}: no such file or folder, and not a hub id (owner/name)")


def config_value(config: dict[str, Any], key: str) -> Optional[Any]:
    """A value from timm's config.json: pretrained_cfg first, then the top level."""
    pretrained = config.get("pretrained_cfg") or {}
    if key in pretrained:
        return pretrained[key]
    return config.get(key)
