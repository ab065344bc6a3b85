"""What a model's output holds (its head), and what every export calls that output.

One table for the SavedModel's signatures and the TFLite file's output tensor and metadata,
so that the same model's output has the same name whichever way it is served. numpy-free.
"""

from __future__ import annotations

from typing import Optional

from keras_repvgg.core.errors import HeadNotExportableError

# A classifier's probabilities (softmax head), logits (no activation) or other scores; a
# pooled feature vector; one feature map; or the five maps of a features_only model.
HEADS = ("probabilities", "logits", "scores", "pooled", "feature_map", "feature_maps")
CLASSIFIER_HEADS = ("probabilities", "logits", "scores")
# The exported output's name per head. `feature_maps` (five outputs) is not exported.
OUTPUT_NAMES = {"probabilities": "probabilities", "logits": "logits", "scores": "scores",
                "pooled": "features", "feature_map": "features"}


def head_of(include_top: bool, classifier_activation: Optional[str], pooling: Optional[str],
            features_only: bool) -> str:
    """The head the build arguments give."""
    if features_only:
        return "feature_maps"
    if include_top:
        if classifier_activation in (None, "linear"):
            return "logits"
        return "probabilities" if classifier_activation == "softmax" else "scores"
    return "pooled" if pooling else "feature_map"


def output_name(head: str, model: str = "the model") -> str:
    """The name an export gives the output of a `head` model."""
    if head not in OUTPUT_NAMES:
        raise HeadNotExportableError(
            f"{model} outputs {head.replace('_', ' ')}; exports hold one output: "
            f"one of the heads {sorted(OUTPUT_NAMES)} (build with features_only=False)"
        )
    return OUTPUT_NAMES[head]


def served_outputs(head: str, model: str = "the model") -> list[str]:
    """The SavedModel's pixel signatures' outputs: the head's, and for logits their softmax too."""
    name = output_name(head, model)
    return [name, "probabilities"] if head == "logits" else [name]


def meaning(head: str, classifier_activation: Optional[str] = None) -> str:
    """One sentence on what the output holds, for the metadata that apps show."""
    return {
        "probabilities": "Probabilities of the classes (softmax).",
        "logits": "Logits of the classes.",
        "scores": f"Scores of the classes ({classifier_activation}).",
        "pooled": "Pooled features.",
        "feature_map": "Feature map.",
        "feature_maps": "Feature maps of the stem and each stage.",
    }[head]
