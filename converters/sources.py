"""Finding a checkpoint: a .safetensors file, a folder with config.json, or a hub id.

Reading is lazy (one tensor at a time through safetensors' memory map), so a
conversion holds about one checkpoint's worth of memory, not two.
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


class TensorReader:
    """Reads the tensors of one safetensors file and keeps count of which were used.

    Every key must be consumed (`take`) or explicitly skipped (`skip`); `finish`
    raises for whatever is left, so that no weight is silently dropped.
    """

    def __init__(self, path: Path):
        from safetensors import SafetensorError, safe_open

        self.path = path
        try:
            self._file = safe_open(str(path), framework="np")
            self._keys = set(self._file.keys())
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
        self._used: set[str] = set()

    def keys(self) -> set[str]:
        return set(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())

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
        try:
            tensor = self._file.get_tensor(key)
        except Exception as err:  # safetensors raises its own error types for bad data
            raise CheckpointError(f"{self.path}: cannot read key {key!r} ({err})") from err
        if not np.issubdtype(tensor.dtype, np.floating):
            raise CheckpointError(
                f"{self.path}: key {key!r} has dtype {tensor.dtype}, expected a float tensor"
            )
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
