"""The int8 export's choice of graph: which candidates a request allows, the held-out
inputs they are scored on, the Keras model behind each, and the search that scores them.

The rule that picks among the scores is `int8_graphs` (numpy only); this module builds and
runs the candidates, so it needs TensorFlow (when called).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from keras_repvgg.core.errors import ExportError

from .int8_graphs import (
    AUTO,
    GRAPHS_BY_NAME,
    TOLERANCE_MARGIN,
    TOLERANCE_RATIO,
    Int8Graph,
    candidates,
    choose,
    competing,
    tolerated_error,
)

MIN_CALIBRATION_SAMPLES = 16


def checked_samples(model, samples: Optional[np.ndarray], what: str) -> np.ndarray:
    if samples is None:
        raise ExportError("int8 quantization needs calibration data (images or an array)")
    samples = np.asarray(samples, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if samples.ndim != 4 or samples.shape[1:] != expected:
        raise ExportError(f"{what} data has shape {samples.shape}, expected (N,) + {expected}")
    if what == "calibration" and len(samples) < MIN_CALIBRATION_SAMPLES:
        raise ExportError(
            f"int8 calibration needs at least {MIN_CALIBRATION_SAMPLES} samples, got {len(samples)}"
        )
    return samples


def requested_graphs(form: str, equalize: Optional[bool], int8_graph: str) -> list[Int8Graph]:
    possible = candidates(form, equalize)
    if int8_graph == AUTO:
        return possible
    if int8_graph not in GRAPHS_BY_NAME:
        raise ExportError(f"int8_graph must be {AUTO!r} or one of {list(GRAPHS_BY_NAME)}, got {int8_graph!r}")
    graph = GRAPHS_BY_NAME[int8_graph]
    if graph not in possible:
        names = [g.name for g in possible]
        why = f"equalize={equalize}" if equalize is not None and graph.equalize != equalize else f"the {form} form"
        raise ExportError(f"int8_graph {int8_graph!r} cannot be made from a model in {why}; it can give {names}"
                          + ("" if graph.keep_identity is False else " (the training form gives all four)"))
    return [graph]


def held_out_split(model, calibration: np.ndarray, held_out: Optional[np.ndarray]):
    """(calibration, held-out): the caller's held-out inputs, or a fifth of the calibration."""
    if held_out is not None:
        return calibration, checked_samples(model, held_out, "held_out")
    keep = max(4, len(calibration) // 5)
    if len(calibration) - keep < MIN_CALIBRATION_SAMPLES:
        raise ExportError(
            f"choosing the int8 graph holds out {keep} of the {len(calibration)} calibration samples, leaving "
            f"fewer than {MIN_CALIBRATION_SAMPLES}: give at least {MIN_CALIBRATION_SAMPLES + 4}, "
            "pass held_out, or name an int8_graph"
        )
    return calibration[:-keep], calibration[-keep:]


def float_graph(model, equalize: bool):
    """One conv per block; the caller's model is not changed."""
    from keras_repvgg.models.model import clone_with_weights
    from keras_repvgg.models.reparameterization import is_training_form, reparameterize

    if is_training_form(model):
        model = reparameterize(model)
    elif equalize:
        model = clone_with_weights(model)
    if equalize:
        from keras_repvgg.models.equalization import equalize as equalize_ranges

        equalize_ranges(model)
    return model


def int8_graph_model(model, graph: Int8Graph):
    """The Keras model whose int8 file is `graph`; the caller's model is not changed."""
    from keras_repvgg.models.model import clone_with_weights
    from keras_repvgg.models.reparameterization import is_training_form, reparameterize

    if is_training_form(model):
        model = reparameterize(model, keep_identity=graph.keep_identity)
    elif graph.equalize:
        model = clone_with_weights(model)  # equalization edits weights in place
    if graph.equalize:
        from keras_repvgg.models.equalization import equalize as equalize_ranges

        equalize_ranges(model)
    return model


def search(model, graphs: list[Int8Graph], held_out: np.ndarray, batch_size: int,
            convert: Callable) -> tuple[bytes, dict]:
    """Every candidate's file, scored on the held-out inputs against the float model."""
    from .runtime import TFLiteRunner, compare_logits

    n = len(held_out) // batch_size * batch_size
    if n == 0:
        raise ExportError(f"{len(held_out)} held-out samples do not fill one batch of {batch_size}")
    x = held_out[:n]
    # The float model as a file with the same input and output: its logits are the reference.
    reference = TFLiteRunner(convert(float_graph(model, False), "float32"), before_softmax=True)(x)
    files, rows = {}, []
    for graph in graphs:
        files[graph.name] = convert(int8_graph_model(model, graph), "int8")
        scores = compare_logits(TFLiteRunner(files[graph.name], before_softmax=True)(x), reference)
        rows.append({"graph": graph.name, "rel_l2": round(scores["rel_l2"], 5),
                     "top1_agreement": round(scores["top1_agreement"], 4), "speed_rank": graph.speed_rank})
    agreements = {row["graph"]: row["top1_agreement"] for row in rows}
    chosen = choose({row["graph"]: row["rel_l2"] for row in rows}, agreements, n)
    agreeing = competing(agreements, n)
    limit = tolerated_error(min(row["rel_l2"] for row in rows if row["graph"] in agreeing))
    for row in rows:
        row["within_tolerance"] = bool(row["graph"] in agreeing and row["rel_l2"] <= limit)
    choice = {"graph": chosen, "chosen_by": "held-out error", "held_out_samples": n,
              "tolerance": f"{TOLERANCE_RATIO} x best + {TOLERANCE_MARGIN}", "candidates": rows}
    return files[chosen], choice


