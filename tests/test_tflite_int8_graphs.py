"""int8 picks its graph by measurement: every candidate scored on held-out inputs, the rule
applied to the scores, and the file being the chosen candidate's. Naming a graph gives it."""

from __future__ import annotations

import numpy as np
import pytest

from keras_repvgg import reparameterize
from keras_repvgg.converters import convert
from keras_repvgg.models.equalization import equalize
from keras_repvgg.tflite import TFLiteRunner, export_tflite, model_ops, read_metadata
from keras_repvgg.tflite.int8_graphs import GRAPHS_BY_NAME, choose, tolerated_error

from helpers import KERAS3_ONLY, random_images, timm_checkpoint

# The search's policy does not depend on Keras' version; the graphs it builds are checked
# under tf-keras too, through test_tflite_export (identity-apart, default int8) and the CLI.
pytestmark = KERAS3_ONLY
SIZE = 32
AS_THE_MODEL = {"input": "normalized", "output": "logits"}


@pytest.fixture(scope="module")
def train():
    return convert(timm_checkpoint("repvgg_a0", seed=5), input_size=SIZE, form="train")


@pytest.fixture(scope="module")
def fused(train):
    """`train` reparameterized, built once for the tests that read it (exports never change it)."""
    return reparameterize(train)


# The default search's inputs, shared by the tests that read its file: 20 calibrated on, the
# last 4 held out.
SEARCH_INPUTS = {"n": 24, "size": SIZE, "seed": 1}


@pytest.fixture(scope="module")
def auto_file(train) -> bytes:
    """The default int8 file of `train` (pixels in, probabilities out), made once."""
    return export_tflite(train, "int8", calibration=random_images(**SEARCH_INPUTS))


def _identity_ops(data: bytes) -> int:
    return {op.name: op.count for op in model_ops(data)}.get("DEPTHWISE_CONV_2D", 0)


def _logits(data: bytes, x: np.ndarray) -> np.ndarray:
    return TFLiteRunner(data, before_softmax=True)(x)


def test_auto_scores_every_candidate_and_keeps_the_rules_choice(train, fused, auto_file):
    calibration = random_images(**SEARCH_INPUTS)
    data = auto_file  # the default: pixels in, probabilities out
    choice = read_metadata(data)["int8"]
    rows = {row["graph"]: row for row in choice["candidates"]}
    assert list(rows) == list(GRAPHS_BY_NAME) and choice["held_out_samples"] == 4  # a fifth, at least 4
    errors = {name: row["rel_l2"] for name, row in rows.items()}
    assert choice["graph"] == choose(errors) and choice["chosen_by"] == "held-out error"
    limit = tolerated_error(min(errors.values()))
    assert all(row["within_tolerance"] == (row["rel_l2"] <= limit) for row in rows.values())
    graph = GRAPHS_BY_NAME[choice["graph"]]
    identity_blocks = sum(1 for layer in train.layers if layer.name.endswith(".identity"))
    kept = len(rows["identity-where-it-pays"]["identity_blocks"]) if graph.where_it_pays else identity_blocks
    assert _identity_ops(data) == (kept if graph.keep_identity else 0) and identity_blocks > 0
    assert read_metadata(data)["form"] == ("deploy-identity" if graph.keep_identity else "deploy")

    # The file is the chosen candidate's, calibrated on the other 20 samples (the per-block
    # graph measures on the held-out 4) ...
    named = export_tflite(train, "int8", calibration=calibration[:20], held_out=calibration[20:], int8_graph=graph.name)
    held_out = random_images(6, SIZE, seed=2)
    p = read_metadata(data)["preprocessing"]
    pixels = (held_out * np.asarray(p["std"], np.float32) + np.asarray(p["mean"], np.float32)) * 255
    np.testing.assert_array_equal(_logits(data, pixels), _logits(named, pixels))
    # ... and its reported error is what it computes on the held-out 4, against Keras' float model.
    held = calibration[20:]
    held_pixels = (held * np.asarray(p["std"], np.float32) + np.asarray(p["mean"], np.float32)) * 255
    reference = fused.predict(held, verbose=0)
    ours = _logits(data, held_pixels)
    rel_l2 = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
    assert rel_l2 == pytest.approx(rows[graph.name]["rel_l2"], rel=1e-3, abs=1e-5)


def test_each_name_gives_that_graph(train):
    calibration = random_images(16, SIZE, seed=1)
    x = random_images(4, SIZE, seed=3)
    identity_blocks = sum(1 for layer in train.layers if layer.name.endswith(".identity"))
    files = {}
    for name, graph in GRAPHS_BY_NAME.items():
        files[name] = export_tflite(train, "int8", calibration=calibration, int8_graph=name, **AS_THE_MODEL)
        choice = read_metadata(files[name])["int8"]
        kept = choice.pop("identity_blocks", None)
        assert choice == {"graph": name, "chosen_by": "named"}
        assert (kept is not None) == graph.where_it_pays
        assert _identity_ops(files[name]) == (len(kept) if kept is not None else identity_blocks if graph.keep_identity else 0)
    # Compensated rounding changes integers only: the plain graph's ops, versions and counts.
    assert model_ops(files["plain-compensated"]) == model_ops(files["plain"])
    assert not np.array_equal(_logits(files["plain"], x), _logits(files["plain-compensated"], x))
    # Equalized means: the file of the equalized float model, calibrated alike.
    for keep_identity, plain, equalized in ((False, "plain", "plain-equalized"),
                                            (True, "identity-apart", "identity-apart-equalized")):
        balanced = equalize(reparameterize(train, keep_identity=keep_identity))
        same = export_tflite(balanced, "int8", calibration=calibration, int8_graph=plain, **AS_THE_MODEL)
        np.testing.assert_array_equal(_logits(files[equalized], x), _logits(same, x))
        assert not np.array_equal(_logits(files[plain], x), _logits(files[equalized], x))


def test_held_out_inputs_and_equalize_narrow_the_search(train, fused):
    lines: list[str] = []
    inputs = {"calibration": random_images(16, SIZE, seed=1), "held_out": random_images(5, SIZE, seed=2)}
    data = export_tflite(fused, "int8", progress=lines.append, **inputs, **AS_THE_MODEL)
    choice = read_metadata(data)["int8"]
    assert [r["graph"] for r in choice["candidates"]] == ["plain", "plain-equalized", "plain-compensated"]
    assert lines == ["int8 candidate 1 of 3: plain", "int8 candidate 2 of 3: plain-equalized",
                     "int8 candidate 3 of 3: plain-compensated"]  # one line as each starts, in order
    assert choice["held_out_samples"] == 5  # all given, none taken from the calibration
    # Converted in worker processes (A0 converts in this one by default), the same file.
    assert export_tflite(fused, "int8", int8_workers=3, **inputs, **AS_THE_MODEL) == data
    data = export_tflite(train, "int8", calibration=random_images(20, SIZE, seed=1), equalize=False, **AS_THE_MODEL)
    graphs = [r["graph"] for r in read_metadata(data)["int8"]["candidates"]]
    assert graphs == ["plain", "plain-compensated", "identity-where-it-pays", "identity-apart"]


# The last block with an identity, its identity branch made to dominate (BatchNorm scale 30x):
# folded, its spike sets the block's int8 steps and the rounding of all its other weights.
SPIKY = "stages.2.13"


def test_the_per_block_graph_keeps_the_identity_apart_where_folding_costs(train):
    from keras_repvgg.models.model import clone_with_weights
    from keras_repvgg.tflite.int8_graphs import identity_blocks_to_keep
    from keras_repvgg.tflite.int8_search import identity_fold_errors

    spiky = clone_with_weights(train)
    bn = spiky.get_layer(f"{SPIKY}.identity")
    gamma, *rest = bn.get_weights()
    bn.set_weights([gamma * 30, *rest])
    calibration = random_images(24, SIZE, seed=1)
    data = export_tflite(spiky, "int8", calibration=calibration, **AS_THE_MODEL)
    choice = read_metadata(data)["int8"]
    rows = {row["graph"]: row for row in choice["candidates"]}
    kept = rows["identity-where-it-pays"]["identity_blocks"]
    identity_blocks = [layer.name[: -len(".identity")] for layer in spiky.layers if layer.name.endswith(".identity")]
    # Measured on the held-out 4, block by block: apart in the spiky block, folded in others.
    measured = identity_fold_errors(spiky, calibration[20:])
    assert [row["block"] for row in measured] == identity_blocks
    assert kept == identity_blocks_to_keep(measured)
    assert SPIKY in kept and 0 < len(kept) < len(identity_blocks), kept
    added = {row["block"]: row["folded"] - row["apart"] for row in measured}
    assert added[SPIKY] == max(added.values())
    # Folding everything costs, and the per-block graph pays less than that.
    assert rows["plain"]["rel_l2"] > 2 * rows["identity-where-it-pays"]["rel_l2"], rows

    # Its file is the one its name gives, measured and calibrated on the same inputs: the same
    # blocks, the same ops, and on the held-out inputs the error the search reported.
    named = export_tflite(spiky, "int8", calibration=calibration[:20], held_out=calibration[20:],
                          int8_graph="identity-where-it-pays", **AS_THE_MODEL)
    assert read_metadata(named)["int8"]["identity_blocks"] == kept == read_metadata(named)["identity_blocks"]
    assert read_metadata(named)["form"] == "deploy-identity" and _identity_ops(named) == len(kept)
    spiky_fused = reparameterize(spiky)  # one build for both comparisons below
    reference = spiky_fused.predict(calibration[20:], verbose=0)
    ours = _logits(named, calibration[20:])
    rel_l2 = np.linalg.norm(ours - reference) / np.linalg.norm(reference)
    assert rel_l2 == pytest.approx(rows["identity-where-it-pays"]["rel_l2"], rel=1e-3, abs=1e-5)
    # And the float graph behind it computes the model: the same function, whatever is folded.
    x = random_images(4, SIZE, seed=3)
    split = reparameterize(spiky, keep_identity=kept)
    np.testing.assert_allclose(split.predict(x, verbose=0), spiky_fused.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def _int8_conv_weights(data: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The file's 3x3 int8 conv kernels by Keras layer name: (integers as (out, kh, kw, in),
    per-channel scales). The converter names them ".../<layer>_1/convolution"."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    found = {}
    for t in interpreter.get_tensor_details():
        if t["dtype"] == np.int8 and len(t["shape"]) == 4 and t["shape"][1] == 3:
            name = t["name"].split("/")[-2].rsplit("_", 1)[0]
            found[name] = (interpreter.get_tensor(t["index"]), t["quantization_parameters"]["scales"])
    return found


def test_the_compensated_graph_holds_its_rounded_kernels_on_the_converters_grid(train, fused, auto_file):
    from keras_repvgg.core.layout import REPARAM_CONV, block_of
    from keras_repvgg.tflite.int8_rounding import channel_steps, round_kernels

    calibration = random_images(**SEARCH_INPUTS)
    named = export_tflite(train, "int8", calibration=calibration[:20], held_out=calibration[20:],
                          int8_graph="plain-compensated")
    assert read_metadata(named)["form"] == "deploy" and _identity_ops(named) == 0
    # The kernels `round_kernels` gives on the 20 calibration inputs (as the model takes
    # them) are the file's int8 weights, at the float kernel's own steps. Integer for integer in a
    # quiet process; under load one run differed (max 0.5 of a step in one conv), so the
    # features behind the moments are not taken to be bit-identical: at least 99% equal.
    expected = reparameterize(train)
    round_kernels(expected, calibration[:20])
    weights = _int8_conv_weights(named)
    convs = [layer.name for layer in expected.layers if block_of(layer.name, REPARAM_CONV) is not None]
    assert sorted(weights) == sorted(convs) and len(convs) == 22
    moved = same = total = 0
    for name in convs:
        kernel, (q, scales) = expected.get_layer(name).get_weights()[0], weights[name]
        assert np.all(np.abs(q).max(axis=(1, 2, 3)) == 127), name  # each channel's largest at 127 steps
        float_kernel = fused.get_layer(name).get_weights()[0]
        np.testing.assert_allclose(scales, channel_steps(float_kernel.astype(np.float64)), rtol=1e-6)
        ours = kernel.transpose(3, 0, 1, 2) / scales[:, None, None, None]
        same += int(np.sum(np.abs(ours - q) < 1e-3))
        total += q.size
        nearest = np.round(float_kernel.transpose(3, 0, 1, 2) / scales[:, None, None, None])
        moved += int(np.sum(q != nearest))
    assert same >= 0.99 * total, (same, total)
    assert moved > 0  # not what nearest rounding gives

    # In the default search it is the candidate its name gives: on the held-out 4, the error
    # the search reported for it.
    row = {r["graph"]: r for r in read_metadata(auto_file)["int8"]["candidates"]}["plain-compensated"]
    p = read_metadata(named)["preprocessing"]
    held = calibration[20:]
    pixels = (held * np.asarray(p["std"], np.float32) + np.asarray(p["mean"], np.float32)) * 255
    reference = fused.predict(held, verbose=0)
    rel_l2 = np.linalg.norm(_logits(named, pixels) - reference) / np.linalg.norm(reference)
    assert rel_l2 == pytest.approx(row["rel_l2"], rel=1e-3, abs=1e-5)
