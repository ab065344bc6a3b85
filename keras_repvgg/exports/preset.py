"""A KerasHub preset folder of a RepVGG model, with a model card in Hugging Face's format.

The folder is what KerasHub's own `save_to_preset` writes for our KerasHub classes
(`models/hub.py`: config.json, task.json, preprocessor.json, image_converter.json,
metadata.json and the weights), plus README.md, the model card: its YAML header (library,
licence, tags, base model) and the variant, input size, parameter count, classes, source
checkpoint and the measured fidelity to timm. `keras_hub.models.ImageClassifier.from_preset`
loads it once `keras_repvgg` is imported; `keras_hub.upload_preset` shares it
(docs/kerashub.md says how to keep this card on the Hugging Face hub).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from keras_repvgg.core.atomic import atomic_path
from keras_repvgg.core.description import ModelDescription
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.models.model import describe

CARD_FILE = "README.md"
FORM_WORDS = {"deploy": "one 3x3 convolution per block", "train": "three branches per block"}
HUB_ID_PREFIX = "timm/"  # a source naming timm's hub repository is the card's base model


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """How closely the model computes timm's logits: measured on `inputs` random normalized
    images at the model's input size, from the checkpoint `source`."""

    max_abs: float  # max |ours - timm| over every logit
    relative: float  # max_abs / max |timm|
    inputs: int
    timm_version: str


def check_target(directory: "str | os.PathLike[str]") -> Path:
    """The preset folder to write: it must not exist, or be empty (KerasRepVGGError otherwise)."""
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise KerasRepVGGError(f"{target}: exists and is not an empty folder; a preset needs a new one")
    return target


def write_preset(model, directory: "str | os.PathLike[str]", fidelity: Optional[Fidelity] = None,
                 why_not_measured: str = "not measured") -> Path:
    """Write `model` (ours, deploy or training form; a classifier or a backbone) as a KerasHub
    preset folder at `directory`, which must not exist or be empty. Atomic: on any failure
    nothing is left there. Returns the folder."""
    from keras_repvgg.models.hub import to_hub

    target = check_target(directory)
    description = describe(model)
    hub_model = to_hub(model)
    if target.is_dir():
        target.rmdir()  # empty: replaced whole by the rename below
    with atomic_path(target) as tmp:
        hub_model.save_to_preset(str(tmp))
        (tmp / CARD_FILE).write_text(model_card(description, hub_model.count_params(), fidelity, why_not_measured))
    return target


def _title(variant: str) -> str:
    return variant.replace("repvgg_", "RepVGG-").upper().replace("REPVGG", "RepVGG")


def model_card(description: ModelDescription, parameters: int, fidelity: Optional[Fidelity],
               why_not_measured: str = "not measured") -> str:
    """README.md of a preset: Hugging Face's YAML header, then what the model is and how close to timm."""
    source = description.source or "unknown"
    header = ["---", "library_name: keras-hub", f"license: {description.license or 'other'}",
              "pipeline_tag: image-classification",
              "tags:", "- image-classification", "- keras", "- keras-hub", "- keras-repvgg", "- repvgg"]
    if source.startswith(HUB_ID_PREFIX):
        header.append(f"base_model: {source}")
    header.append("---")
    p = description.preprocessing
    task = (f"classifier of {description.classes} classes (logits)" if description.include_top
            else "backbone (the last stage's feature map)")
    rows = [
        ("variant", f"`{description.variant}`"),
        ("form", f"{description.form} ({FORM_WORDS.get(description.form, description.form)})"),
        ("task", task),
        ("input", f"{p.input_size}x{p.input_size} RGB, normalized with mean {list(p.mean)} and std {list(p.std)}"),
        ("eval transform", f"shorter side to {p.input_size}/{p.crop_pct}, {p.interpolation}, centre crop "
                           f"(the preset's image converter applies it)"),
        ("parameters", f"{parameters:,}"),
        ("source checkpoint", f"`{source}`"),
        ("licence", description.license or "not stated by the checkpoint; see its own model card"),
    ]
    if fidelity is not None:
        closeness = (f"largest absolute difference {fidelity.max_abs:.2e} over {fidelity.inputs} random inputs "
                     f"({fidelity.relative:.2e} of timm's largest logit), timm {fidelity.timm_version}")
    else:
        closeness = why_not_measured
    rows.append(("fidelity to timm", closeness))
    labels = description.labels
    if labels:
        shown = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
        rows.append(("classes", f"{len(labels)}: {shown}"))
    table = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    body = [
        f"# {_title(description.variant)} for KerasHub",
        "",
        f"{_title(description.variant)} (RepVGG, Ding et al., CVPR 2021), converted from a timm checkpoint by "
        "keras-repvgg into a KerasHub preset that computes what timm's PyTorch model computes.",
        "",
        *table,
        "",
        "## Use",
        "",
        "```python",
        "import keras_repvgg  # registers the RepVGG classes with KerasHub",
        "import keras_hub",
        "",
        'classifier = keras_hub.models.ImageClassifier.from_preset("PRESET")  # this folder, or hf://USER/NAME',
        "logits = classifier.predict(images)  # 0-255 RGB images of any size",
        'backbone = keras_hub.models.Backbone.from_preset("PRESET")',
        'mine = keras_hub.models.ImageClassifier.from_preset("PRESET", num_classes=10)  # a new head',
        "```",
        "",
        "The weights are timm's; the checkpoint's own licence applies.",
        "",
    ]
    return "\n".join(header + [""] + body)
