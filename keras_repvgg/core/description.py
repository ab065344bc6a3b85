"""What a built model is, recorded once when it is built and read by everything after.

The variant, the form, the head (what the output holds), whether the input is 0-255
pixels or already normalized, the eval transform and the class names travel inside the
model as the configuration of an identity layer (`model.Description`), so that they
survive `.keras` save and load, and in every export's `keras_repvgg.json`. Exports,
`predict`, `reparameterize` and the equalizer read them (`model.describe`) instead of
guessing from layer names, model names or activations. No TensorFlow here: the LiteRT
side reads the same schema.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from keras_repvgg.core.configs import Preprocessing
from keras_repvgg.core.errors import KerasRepVGGError, NotDescribedError
from keras_repvgg.core.heads import HEADS, head_of
from keras_repvgg.core.labels import IMAGENET_CLASSES, imagenet_labels

FORMS = ("deploy", "train", "deploy-identity")
__all__ = ["FORMS", "HEADS", "ModelDescription", "NotDescribedError"]
# Descriptions written before this version left `labels` None for a 1000-class model and meant
# ImageNet's (readers then guessed); from this version the labels are always written out.
LABELS_EXPLICIT = 2
VERSION_KEY = "description_version"


@dataclasses.dataclass(frozen=True)
class ModelDescription:
    """The build arguments of a RepVGG model that decide what it computes and how to feed it.

    The build input: `model.build(description)` makes the model, which records `resolved()`.
    """

    variant: str
    form: str = "deploy"
    include_top: bool = True
    classes: int = 1000
    classifier_activation: Optional[str] = "softmax"
    pooling: Optional[str] = None
    features_only: bool = False
    include_preprocessing: bool = False
    preprocessing: Preprocessing = Preprocessing()  # its input_size is the model's
    # The class names, written out (ImageNet's too); None: none known, shown as class indices.
    labels: Optional[tuple[str, ...]] = None
    source: Optional[str] = None  # the checkpoint it was converted from: a hub id or a file name
    license: Optional[str] = None  # the checkpoint's licence, where its config names one
    # deploy-identity: the blocks (timm's paths) whose identity branch is kept apart; None: every
    # block that has one. The int8 graph "identity-where-it-pays" keeps it in some blocks only.
    identity_blocks: Optional[tuple[str, ...]] = None

    @property
    def head(self) -> str:
        """What the output holds: one of `heads.HEADS`."""
        return head_of(self.include_top, self.classifier_activation, self.pooling, self.features_only)

    @property
    def takes_pixels(self) -> bool:
        """0-255 RGB in (normalized inside the graph), else input already normalized."""
        return self.include_preprocessing

    @property
    def input(self) -> str:
        return "pixels" if self.include_preprocessing else "normalized"

    def replace(self, **changes: Any) -> "ModelDescription":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["preprocessing"]["mean"] = list(self.preprocessing.mean)
        out["preprocessing"]["std"] = list(self.preprocessing.std)
        out["labels"] = list(self.labels) if self.labels is not None else None
        if self.identity_blocks is None:  # files of every other graph read as they always did
            del out["identity_blocks"]
        else:
            out["identity_blocks"] = list(self.identity_blocks)
        out[VERSION_KEY] = LABELS_EXPLICIT
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelDescription":
        data = dict(data)
        version = data.pop(VERSION_KEY, 1)
        p = dict(data["preprocessing"])
        p["mean"], p["std"] = tuple(p["mean"]), tuple(p["std"])
        labels = data.get("labels")
        if labels is None and version < LABELS_EXPLICIT and data.get("include_top", True) \
                and data.get("classes", 1000) == IMAGENET_CLASSES:
            # An older file: it was written under the rule "1000 classes are ImageNet's".
            labels = imagenet_labels()
        blocks = data.get("identity_blocks")
        return cls(**{**data, "preprocessing": Preprocessing(**p),
                      "labels": tuple(labels) if labels is not None else None,
                      "identity_blocks": tuple(blocks) if blocks is not None else None})

    def resolved(self, input_size: Optional[int]) -> "ModelDescription":
        """What a model built from this description records, at this input height (None:
        the eval transform's): checked, with the head fields made consistent (a
        features_only model has no classifier, a classifier no pooling) and the input size.

        Raises KerasRepVGGError for a form, pooling, class count or label list that no
        model can have.
        """
        if self.form not in FORMS:
            raise KerasRepVGGError(f"form must be one of {FORMS}, got {self.form!r}")
        if self.pooling not in (None, "avg", "max"):
            raise KerasRepVGGError(f"pooling must be None, 'avg' or 'max', got {self.pooling!r}")
        if self.include_top and self.classes < 1:
            raise KerasRepVGGError(f"classes must be positive with include_top=True, got {self.classes}")
        if self.labels is not None and (not self.include_top or len(self.labels) != self.classes):
            raise KerasRepVGGError(
                f"{len(self.labels)} labels for a model with {self.classes if self.include_top else 'no'} classes"
            )
        if self.identity_blocks is not None and self.form != "deploy-identity":
            raise KerasRepVGGError(f"identity_blocks are for the deploy-identity form, not {self.form!r}")
        include_top = self.include_top and not self.features_only
        return self.replace(
            include_top=include_top,
            classes=self.classes if include_top else 0,
            classifier_activation=self.classifier_activation if include_top else None,
            pooling=self.pooling if not (include_top or self.features_only) else None,
            preprocessing=dataclasses.replace(self.preprocessing, input_size=int(input_size or self.preprocessing.input_size)),
            labels=tuple(self.labels) if self.labels is not None else None,
            identity_blocks=tuple(self.identity_blocks) if self.identity_blocks is not None else None,
        )


# --- what exports carry -----------------------------------------------------------------
# One schema for the TFLite file's, the SavedModel's and the ONNX file's `keras_repvgg.json`: the description,
# plus what it implies, spelled out for readers in other languages.
METADATA_FILE = "keras_repvgg.json"
LABELS_FILE = "labels.txt"


def export_metadata(description: ModelDescription) -> dict[str, Any]:
    return {**description.to_dict(), "head": description.head, "input": description.input}


def from_export_metadata(metadata: dict[str, Any]) -> ModelDescription:
    fields = {f.name for f in dataclasses.fields(ModelDescription)} | {VERSION_KEY}
    return ModelDescription.from_dict({k: v for k, v in metadata.items() if k in fields})
