"""The int8 export's choice of graph: which candidates a request allows, the held-out
inputs they are scored on, the Keras model behind each, and the search that scores them.

The rule that picks among the scores is `int8_graphs` (numpy only); this module builds and
runs the candidates, so it needs TensorFlow (when called).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

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
    identity_blocks_to_keep,
    tolerated_error,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

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


def identity_blocks_that_pay(model, measure_on: np.ndarray) -> tuple[list[str], list[dict]]:
    """The blocks of the training-form `model` whose identity `keeps_identity_apart` keeps
    apart, measured on `measure_on` (inputs as the model takes them), and the measurements."""
    rows = identity_fold_errors(model, measure_on)
    return identity_blocks_to_keep(rows), rows


def int8_graph_model(model, graph: Int8Graph, measure_on: Optional[np.ndarray] = None,
                     calibration: Optional[np.ndarray] = None):
    """The Keras model whose int8 file is `graph`; the caller's model is not changed.
    `measure_on`: the inputs (as the model takes them) the per-block graph measures on;
    `calibration`: those the compensated rounding measures on."""
    from keras_repvgg.models.model import clone_with_weights
    from keras_repvgg.models.reparameterization import is_training_form, reparameterize

    if graph.compensated:
        from .int8_rounding import round_kernels

        assert calibration is not None, "the compensated rounding measures on the calibration inputs"
        model = reparameterize(model) if is_training_form(model) else clone_with_weights(model)
        round_kernels(model, calibration)
    elif graph.where_it_pays:
        assert measure_on is not None and is_training_form(model), "candidates() offers it for the training form only"
        model = reparameterize(model, keep_identity=identity_blocks_that_pay(model, measure_on)[0])
    elif is_training_form(model):
        model = reparameterize(model, keep_identity=graph.keep_identity)
    elif graph.equalize:
        model = clone_with_weights(model)  # equalization edits weights in place
    if graph.equalize:
        from keras_repvgg.models.equalization import equalize as equalize_ranges

        equalize_ranges(model)
    return model


def _rounding_noise(kernel: np.ndarray) -> np.ndarray:
    """What int8's per-output-channel symmetric rounding adds to a (kh, kw, in, out) kernel."""
    step = np.abs(kernel).max(axis=(0, 1, 2)) / 127.0
    step = np.where(step > 0, step, 1.0)
    return np.round(kernel / step) * step - kernel


def _predict(model, x: np.ndarray) -> np.ndarray:
    """`model.predict(x, verbose=0)`: the same compiled step on the same batches of 32, without
    `predict`'s per-call data pipeline, which cost 0.3 s a call on A0 at 32 px against 0.05 s
    (`identity_fold_errors` predicts twice per identity block)."""
    return np.concatenate([np.asarray(model.predict_on_batch(x[i:i + 32])) for i in range(0, len(x), 32)])


def identity_fold_errors(model, held_out: np.ndarray, samples: int = 16) -> list[dict]:
    """For each block with an identity branch of the training-form `model`, measured on (up to
    `samples` of) the held-out inputs: the relative L2 change of the logits when only that
    block's kernel is rounded as int8 rounds it (per output channel), with the identity folded
    into the kernel, and with it kept apart. The float model otherwise, so that each figure is
    the block's own, carried through the rest of the network."""
    from keras_repvgg.core.configs import block_plan, get_variant
    from keras_repvgg.core.layout import block_layout
    from keras_repvgg.models.model import describe
    from keras_repvgg.models.reparameterization import identity_kernels, reparameterize

    kernels = {spec.name: (folded, apart) for spec, _, folded, apart in identity_kernels(model)}
    if not kernels:
        return []
    apart_model = reparameterize(model, keep_identity=True)
    x = held_out[:samples]
    reference = _predict(apart_model, x)
    norm = float(np.linalg.norm(reference)) or 1.0
    rows = []
    height, width = (int(d or 1) for d in model.input_shape[1:3])
    for spec in block_plan(get_variant(describe(model).variant), int(model.input_shape[-1] or 3)):
        height, width = -(-height // spec.stride), -(-width // spec.stride)
        if spec.name not in kernels:
            continue
        layout = block_layout(spec, "deploy-identity")
        assert layout.reparam_conv is not None and layout.identity_scale is not None
        conv, identity = apart_model.get_layer(layout.reparam_conv.name), apart_model.get_layer(layout.identity_scale.name)
        kernel, bias = conv.get_weights()
        scale = identity.get_weights()
        folded, apart = kernels[spec.name]
        errors = {}
        for name, rounded, kept in (("folded", folded, False), ("apart", apart, True)):
            conv.set_weights([(rounded + _rounding_noise(rounded)).astype(np.float32), bias])
            identity.set_weights(scale if kept else [np.zeros_like(scale[0])])
            errors[name] = float(np.linalg.norm(_predict(apart_model, x) - reference)) / norm
        conv.set_weights([kernel, bias])
        identity.set_weights(scale)
        rows.append({"block": spec.name, **errors, "cost": height * width * spec.out_channels})
    return rows


def search(model, graphs: list[Int8Graph], held_out: np.ndarray, batch_size: int,
           convert: Callable[[Any], "Future[bytes]"], measure_on: np.ndarray, float_logits: Callable,
           calibration: np.ndarray, progress: Optional[Callable[[str], None]] = None):
    """Every candidate's file, scored on the held-out inputs against the float model: (the
    chosen one's bytes, the choice for the metadata, the chosen graph's Keras model).
    `held_out` is as the file takes it, `measure_on` the same inputs as the model takes them,
    `calibration` the calibration inputs as the model takes them;
    `convert(keras_model)`: a future of its int8 file (`conversion_worker.Workers.submit`:
    converted here at once, or in a worker process while the next candidate is built);
    `float_logits(keras_model, x)`: that model's logits on x, taken as the file takes them;
    `progress(line)`, where given, as each candidate starts."""
    from keras_repvgg.models.model import describe

    from .runtime import TFLiteRunner, compare_logits

    n = len(held_out) // batch_size * batch_size
    if n == 0:
        raise ExportError(f"{len(held_out)} held-out samples do not fill one batch of {batch_size}")
    x = held_out[:n]
    # The reference: the float model in Keras, behind the file's own input conversion. (A
    # float .tflite of it computes the same to 1e-5 of the logit scale, and cost one more
    # conversion per search.)
    reference_model = float_graph(model, False)
    reference = float_logits(reference_model, x)
    pending, models, rows = {}, {}, []
    for number, graph in enumerate(graphs, 1):
        if progress is not None:
            progress(f"int8 candidate {number} of {len(graphs)}: {graph.name}")
        # The plain graph's model is the reference's (the training form fused, identity folded):
        # built once. Converting it changes nothing in it.
        plain = not (graph.keep_identity or graph.equalize or graph.where_it_pays or graph.compensated)
        models[graph.name] = reference_model if plain else int8_graph_model(model, graph, measure_on, calibration)
        pending[graph.name] = convert(models[graph.name])
    files = {name: future.result() for name, future in pending.items()}
    for graph in graphs:
        scores = compare_logits(TFLiteRunner(files[graph.name], before_softmax=True)(x), reference)
        rows.append({"graph": graph.name, "rel_l2": round(scores["rel_l2"], 5),
                     "top1_agreement": round(scores["top1_agreement"], 4), "speed_rank": graph.speed_rank})
        if graph.where_it_pays:  # which blocks it kept the identity apart in
            rows[-1]["identity_blocks"] = list(describe(models[graph.name]).identity_blocks or ())
    agreements = {row["graph"]: row["top1_agreement"] for row in rows}
    chosen = choose({row["graph"]: row["rel_l2"] for row in rows}, agreements, n)
    agreeing = competing(agreements, n)
    limit = tolerated_error(min(row["rel_l2"] for row in rows if row["graph"] in agreeing))
    for row in rows:
        row["within_tolerance"] = bool(row["graph"] in agreeing and row["rel_l2"] <= limit)
    choice = {"graph": chosen, "chosen_by": "held-out error", "held_out_samples": n,
              "tolerance": f"{TOLERANCE_RATIO} x best + {TOLERANCE_MARGIN}", "candidates": rows}
    return files[chosen], choice, models[chosen]


