"""Finding a checkpoint: a .safetensors file, a folder with config.json, a hub id,
or an official RepVGG PyTorch file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from keras_repvgg.core.artifacts import CHECKPOINT_WEIGHTS, PICKLE_SUFFIXES, SAFETENSORS_SUFFIX

from .errors import CheckpointError
from .readers import SafetensorsReader, TensorReader

WEIGHTS_NAME = CHECKPOINT_WEIGHTS
CONFIG_NAME = "config.json"
_HUB_ID = re.compile(r"^(hf[-_]hub:)?[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclasses.dataclass
class Checkpoint:
    weights_path: Path
    config: dict[str, Any]  # timm's config.json, or {} where there is none

    @property
    def is_pickle(self) -> bool:
        return self.weights_path.suffix in PICKLE_SUFFIXES

    def reader(self) -> TensorReader:
        if self.is_pickle:
            from .official import read_official

            return read_official(self.weights_path)
        return SafetensorsReader(self.weights_path)


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
        if path.suffix in PICKLE_SUFFIXES:
            return Checkpoint(path, {})
        if path.suffix != SAFETENSORS_SUFFIX:
            raise CheckpointError(
                f"{path}: unsupported checkpoint format {path.suffix or '(no suffix)'!r}; "
                f"expected .safetensors, or an official RepVGG {'/'.join(PICKLE_SUFFIXES)} file"
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


def checkpoint_labels(checkpoint: Checkpoint, source: "str | os.PathLike[str]", classes: int) -> Optional[list[str]]:
    """The class names a checkpoint states: config.json's `label_names`, or ImageNet-1k's where
    it is timm's ImageNet-1k checkpoint (its pretrained_cfg tag, else a `timm/` hub id's tag, ends
    in `in1k`, timm's name for that dataset, and its head has 1000 classes). Else None: a
    1000-class head alone says nothing about what its classes are."""
    from keras_repvgg.core.labels import IMAGENET_CLASSES, checked_labels, imagenet_labels

    try:
        named = checked_labels(classes, config_value(checkpoint.config, "label_names") or None)
    except ValueError as err:
        raise CheckpointError(f"{checkpoint.weights_path} (its config.json): {err}") from None
    if named is not None:
        return named
    return imagenet_labels() if classes == IMAGENET_CLASSES and _timm_in1k(checkpoint, source) else None


def _timm_in1k(checkpoint: Checkpoint, source: "str | os.PathLike[str]") -> bool:
    tag = (checkpoint.config.get("pretrained_cfg") or {}).get("tag")
    if not tag:
        hub = re.sub(r"^hf[-_]hub:", "", str(source))
        owner, _, name = hub.partition("/")
        tag = name.partition(".")[2] if owner == "timm" and not Path(source).exists() else ""
    return str(tag).endswith("in1k")
