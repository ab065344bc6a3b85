"""Trained networks over several seeds: int8 candidates and transfer learning on digits.

A network trained here is not bit-reproducible across CPUs, so its figures are
reported as the median and range over seeds; the tests' thresholds come from these.

    python -m benchmarks --sections int8_seeds transfer --seeds 5
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from benchmarks.digits import digits, train_timm, train_timm_a0

# The int8 graphs the exporter can make from one trained A0 (named as in
# keras_repvgg.tflite.int8_graphs), its default choice among them, and a stress case.
AUTO = "auto (the default)"
PEER = "litert-torch PT2E (per-channel)"
INT8_CANDIDATES = (
    "plain",
    "plain-equalized",
    "plain-compensated",
    "identity-where-it-pays",
    "identity-apart",
    "identity-apart-equalized",
    AUTO,
    "rescaled channels, equalized",
    "rescaled channels, not equalized",
)


def _spread(values: list[float], digits_: int = 4) -> str:
    """'median [min, max]'."""
    return f"{round(statistics.median(values), digits_)} [{round(min(values), digits_)}, {round(max(values), digits_)}]"


def rescaled_copy(train_form, seed: int = 0):
    """The identity-apart deploy form with every block's output channels rescaled 10x
    up or down at random: the same function, channel ranges far apart."""
    from keras_repvgg import reparameterize
    from keras_repvgg.core.layout import REPARAM_CONV, block_of
    from keras_repvgg.models.equalization import rescale_channels

    model = reparameterize(train_form, keep_identity=True)
    rng = np.random.default_rng(seed)
    scales = {}
    for layer in model.layers:
        block = block_of(layer.name, REPARAM_CONV)
        if block is not None:
            scales[block] = 10 ** rng.uniform(-1, 1, layer.filters)
    rescale_channels(model, scales)
    return model


def int8_candidates(train_form, xtr: np.ndarray, xte: np.ndarray, yte: np.ndarray,
                    calibration_size: int = 256, held_out_size: int = 64,
                    files: "dict[str, bytes] | None" = None, peer=None,
                    names: "tuple[str, ...]" = INT8_CANDIDATES) -> dict[str, dict[str, Any]]:
    """Accuracy, top-1 agreement with float and relative L2 of the logits, per candidate
    (the .tflite files land in `files`, where given). Every candidate calibrates on the same
    training images; the default's search scores on the next `held_out_size` of them.
    `peer`: timm's fused model, to add litert-torch's PT2E int8 of the same weights.
    `names`: the candidates to export (all, by default)."""
    from keras_repvgg import reparameterize
    from keras_repvgg.tflite import TFLiteRunner, export_tflite, read_metadata

    reference = reparameterize(train_form).predict(xte, verbose=0)
    rescaled = rescaled_copy(train_form)
    calibration = xtr[:calibration_size]
    held_out = xtr[calibration_size:calibration_size + held_out_size]
    sources: dict[str, tuple[Any, dict[str, Any]]] = {
        name: (train_form, {"int8_graph": name, "held_out": held_out}) for name in INT8_CANDIDATES[:6]}
    sources[AUTO] = (train_form, {"held_out": held_out})
    sources["rescaled channels, equalized"] = (rescaled, {"int8_graph": "identity-apart-equalized"})
    sources["rescaled channels, not equalized"] = (rescaled, {"int8_graph": "identity-apart"})

    def scores(logits: np.ndarray) -> dict[str, Any]:
        return {"accuracy": float((logits.argmax(-1) == yte).mean()),
                "top1_agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
                "rel_l2": float(np.linalg.norm(logits - reference) / np.linalg.norm(reference))}

    out = {"float": scores(reference)}
    for name in names:
        model, options = sources[name]
        # Normalized in and logits out: the graph under test, compared on logits.
        data = export_tflite(model, "int8", calibration=calibration, input="normalized", output="logits", **options)
        if files is not None:
            files[name] = data
        out[name] = scores(TFLiteRunner(data)(xte))
        choice = (read_metadata(data) or {})["int8"]
        if name == AUTO:
            out[name]["chosen"] = choice["graph"]
        if "identity_blocks" in choice:  # the per-block graph: how many blocks keep the identity apart
            out[name]["kept_apart"] = len(choice["identity_blocks"])
    if peer is not None:
        from benchmarks.peers import litert_torch_tflite

        out[PEER] = scores(TFLiteRunner(litert_torch_tflite(peer, calibration))(xte))
    return out


def int8_seeds(seeds: int = 5, variants: "tuple[str, ...]" = ("repvgg_a0", "repvgg_b1g4")) -> list[dict[str, Any]]:
    """int8 candidates, the default's choice and litert-torch's int8 (where installed) on
    timm's `variants` trained on digits with `seeds` seeds: median [min, max], and the mean
    drop (the per-block graph's target is a mean within 0.1 point of identity-apart's)."""
    rows = []
    for arch in variants:
        rows += _int8_seeds(arch, seeds)
    return rows


def _int8_seeds(arch: str, seeds: int) -> list[dict[str, Any]]:
    import copy
    import importlib.util

    import timm

    from benchmarks.common import convert_timm

    with_peer = importlib.util.find_spec("litert_torch") is not None
    xtr, xte, ytr, yte = digits()
    runs = []
    for seed in range(seeds):
        timm_model = train_timm(arch, xtr, ytr, seed=seed)
        fused = timm.utils.reparameterize_model(copy.deepcopy(timm_model)).eval() if with_peer else None
        train_form = convert_timm(timm_model, form="train", input_size=32)
        runs.append(int8_candidates(train_form, xtr, xte, yte, peer=fused))
        print(f"{arch} seed {seed}", runs[-1], flush=True)
    rows = []
    for name in ("float", *INT8_CANDIDATES, *((PEER,) if with_peer else ())):
        acc = [r[name]["accuracy"] for r in runs]
        drops = [100 * (r["float"]["accuracy"] - r[name]["accuracy"]) for r in runs]
        row = {
            "variant": arch,
            "graph": name,
            "accuracy": _spread(acc),
            "drop_points": _spread(drops, 2),
            "mean_drop_points": round(statistics.mean(drops), 2),
            "top1_agreement": _spread([r[name]["top1_agreement"] for r in runs]),
            "rel_l2": _spread([r[name]["rel_l2"] for r in runs], 3),
        }
        chosen = [r[AUTO]["chosen"] for r in runs]  # every row has the column: tables take the first row's keys
        row["chosen"] = ", ".join(f"{g} {chosen.count(g)}/{seeds}" for g in sorted(set(chosen))) if name == AUTO else ""
        kept = [r[name]["kept_apart"] for r in runs if "kept_apart" in r[name]]
        row["identity_kept_apart"] = _spread(kept, 0) if kept else ""
        rows.append(row)
    return rows


def transfer_once(seed: int, epochs_head: int = 10, epochs_tuned: int = 5) -> dict[str, Any]:
    """A backbone trained in timm on digits 0-4, frozen under a new Keras head fitted on
    5-9, then fine-tuned whole: held-out accuracy on 5-9 after each step, and whether
    the frozen backbone's weights stayed put."""
    from benchmarks.common import convert_timm
    from keras_repvgg.models.backend import keras

    xtr, xte, ytr, yte = digits()
    first, second = ytr < 5, yte >= 5
    timm_model = train_timm_a0(xtr[first], ytr[first], epochs=6, seed=seed)
    backbone = convert_timm(timm_model, input_size=32, include_top=False, pooling="avg")
    backbone.trainable = False
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([backbone, keras.layers.Dense(5, activation="softmax", name="digits_5_9")])
    # As docs/training.md advises: the metric an object and the optimizer built before fit,
    # so that fit traces its step once.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.optimizer.build(model.trainable_variables)
    frozen = [w.copy() for w in backbone.get_weights()]
    x5, y5 = xtr[ytr >= 5], ytr[ytr >= 5] - 5
    model.fit(x5, y5, epochs=epochs_head, batch_size=32, verbose=0)
    probe = model.evaluate(xte[second], yte[second] - 5, verbose=0)[1]
    unchanged = all(np.array_equal(a, b) for a, b in zip(frozen, backbone.get_weights(), strict=True))
    backbone.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(5e-4), loss="sparse_categorical_crossentropy",
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.optimizer.build(model.trainable_variables)
    model.fit(x5, y5, epochs=epochs_tuned, batch_size=32, verbose=0)
    tuned = model.evaluate(xte[second], yte[second] - 5, verbose=0)[1]
    return {"frozen": float(probe), "tuned": float(tuned), "frozen_weights_unchanged": unchanged}


def transfer(seeds: int = 5) -> list[dict[str, Any]]:
    """Transfer learning on digits over `seeds` seeds: median [min, max] accuracy per step."""
    runs = [transfer_once(seed) for seed in range(seeds)]
    for seed, run in enumerate(runs):
        print(f"seed {seed}:", run, flush=True)
    return [
        {"step": "frozen backbone, new head", "accuracy_5_9": _spread([r["frozen"] for r in runs])},
        {"step": "fine-tuned whole", "accuracy_5_9": _spread([r["tuned"] for r in runs])},
    ]


def per_block_latency(variants: "tuple[str, ...]" = ("repvgg_a0", "repvgg_b1g4"), seeds: int = 5, size: int = 224,
                      repeats: int = 20, rounds: int = 8) -> list[dict[str, Any]]:
    """The per-block int8 graph's speed where it matters: timm's `variant` trained on digits
    (`seeds` seeds) chooses its blocks on the held-out digits, and the same weights at `size`
    px are timed with those blocks' identity apart, against the plain graph, identity-apart
    the plain graph with compensated rounding, and litert-torch's int8 where it is installed
    (it wants torch below 2.15), in interleaved rounds (medians; XNNPACK, batch 1)."""
    import copy
    import importlib.util
    import math

    import timm

    from benchmarks.common import convert_timm, median_seconds
    from benchmarks.peers import litert_torch_tflite, sgemm_gflops
    from keras_repvgg import reparameterize
    from keras_repvgg.tflite import TFLiteRunner, export_tflite
    from keras_repvgg.tflite.int8_search import identity_blocks_that_pay

    with_peer = importlib.util.find_spec("litert_torch") is not None
    xtr, _, ytr, _ = digits()
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((32, size, size, 3)).astype(np.float32)
    x = rng.standard_normal((1, size, size, 3)).astype(np.float32)
    rows = []
    for arch in variants:
        for seed in range(seeds):
            timm_model = train_timm(arch, xtr, ytr, seed=seed)
            kept, _ = identity_blocks_that_pay(convert_timm(timm_model, form="train", input_size=32), xtr[256:320])
            train_form = convert_timm(timm_model, form="train", input_size=size)
            fused = timm.utils.reparameterize_model(copy.deepcopy(timm_model)).eval()
            options: dict[str, Any] = {"calibration": calibration, "input": "normalized", "output": "logits"}
            files = {
                "plain": export_tflite(train_form, "int8", int8_graph="plain", **options),
                "plain-compensated": export_tflite(train_form, "int8", int8_graph="plain-compensated", **options),
                "identity-where-it-pays": export_tflite(
                    reparameterize(train_form, keep_identity=kept), "int8", int8_graph="identity-apart", **options),
                "identity-apart": export_tflite(train_form, "int8", int8_graph="identity-apart", **options),
            }
            if with_peer:
                files["litert-torch"] = litert_torch_tflite(fused, calibration)
            runners = {name: TFLiteRunner(data) for name, data in files.items()}
            times: dict[str, list[float]] = {name: [] for name in files}
            names = list(runners)
            for r in range(rounds):
                sgemm_gflops(repeats=3)  # the same warm-up between rounds as the peers section
                # Each round starts with another file: the first after the warm-up ran 1.5x slower.
                for name in names[r % len(names):] + names[:r % len(names)]:
                    times[name].append(median_seconds(lambda: runners[name](x), repeats))
            plain = float(np.median(times["plain"]))
            peer = float(np.median(times["litert-torch"])) if with_peer else math.nan
            for name in files:
                latency = float(np.median(times[name]))
                rows.append({"variant": arch, "seed": seed, "graph": name, "identity_kept_apart":
                             len(kept) if name == "identity-where-it-pays" else "", "latency_ms_b1": round(latency * 1e3, 2),
                             "over_plain": round(latency / plain, 3), "over_litert_torch": round(latency / peer, 3)})
                print(rows[-1], flush=True)
    return rows
