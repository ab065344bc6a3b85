"""int8 from a trained network keeps its accuracy (scikit-learn's digits, a real data set).

The network is trained here, and training is not bit-reproducible across CPUs: the bounds
below hold across seeds and machines (`python -m benchmarks --sections int8_seeds` measures
the spread). Which int8 graph is closest to float on one trained model is an observation
for the benchmark's table, not a promise: what is asserted is the default's accuracy and
that its file is the graph its own rule chose.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.digits import digits as _digits
from benchmarks.digits import train_timm_a0 as _train_timm_a0
from benchmarks.trained import AUTO, int8_candidates
from keras_repvgg import reparameterize
from keras_repvgg.converters import convert
from keras_repvgg.tflite import TFLiteRunner, check_gpu, export_tflite, read_metadata, run_on_gpu, write_tflite

from helpers import save_checkpoint

# The promise (docs/benchmarks.md; docs/int8.md): the default int8 file loses at most 2 of
# the 360 test images (0.56 point) of top-1 on the trained digits model, and its logits are
# within a relative L2 of 0.125 of the float model's, below litert-torch's PT2E int8 of the
# same weights on every seed measured (0.129-0.174, median 0.144). Measured:
# - AMD EPYC, AVX-512, 5 seeds (`python -m benchmarks --sections int8_seeds`): the default
#   chose identity-apart, lost 0 points, relative L2 0.016-0.021; this test on 2026-11-30:
#   0 points, 0.018.
# - The same machine with ONEDNN_MAX_CPU_ISA=AVX2 (torch trains another model there): the
#   default chose plain-equalized and gained 0.28 point, relative L2 0.070 (every candidate:
#   0.070-0.18); with one thread, as each xdist worker runs: lost 0.28 point, 0.093.
# - Earlier defaults on an Intel Xeon and two EPYCs: -0.3 to 0.6 point, 0.022-0.11.
# Channels rescaled 10x either way and equalized, against the same graph (identity apart,
# equalized) of the model as trained, relative L2: 0.022 against 0.022 (AVX-512), 0.090
# against 0.099 (AVX2, 2 threads), 0.157 against 0.145 (AVX2, one thread as in CI, where an
# earlier fixed bound of 0.144 failed): at most 1.09x. Not equalized: 41-81 points lost,
# relative L2 0.74-0.97 (the control).
MAX_DROP_POINTS = 100 * 2 / 360 + 1e-9  # 2 images, whatever the rounding of the means
MIN_AGREEMENT = 0.98
MAX_REL_L2 = 0.125
SAME_GRAPH = "identity-apart-equalized"  # the graph the rescaled pair is exported with
RESCALED_OVER_SAME = 1.5
# Compensated rounding against nearest rounding of the same fused kernels (both plain
# graphs, the same ops), on the search's 64 held-out images. Measured on an AVX2-only EPYC,
# 2026-12-01, trained digits A0, relative L2 on the 360 test images: seed 0 0.034 against
# 0.173, seed 1 0.025 against 0.120 (identity-apart 0.074 and 0.017).
COMPENSATED_OVER_PLAIN = 0.5

@pytest.mark.slow
@pytest.mark.timeout(1800)  # trains in timm, then exports four int8 files (the default makes five)
def test_int8_of_a_trained_a0_keeps_its_accuracy(tmp_path, request):
    xtr, xte, ytr, yte = _digits()
    timm_model = _train_timm_a0(xtr, ytr)
    with torch.no_grad():
        timm_logits = timm_model(torch.from_numpy(xte.transpose(0, 3, 1, 2).copy())).numpy()
    timm_acc = (timm_logits.argmax(-1) == yte).mean()
    path = save_checkpoint(timm_model, tmp_path / "digits_a0.safetensors")
    train_form = convert(path, form="train", input_size=32)
    float_acc = (reparameterize(train_form).predict(xte, verbose=0).argmax(-1) == yte).mean()
    assert float_acc == pytest.approx(timm_acc) and float_acc >= 0.95

    files: dict[str, bytes] = {}
    # The default; the rescaled pair and, as their yardstick, the same graph of the model as
    # trained. The other named graphs only as the default makes them.
    results = int8_candidates(train_form, xtr, xte, yte, files=files,
                              names=(AUTO, SAME_GRAPH, "rescaled channels, equalized", "rescaled channels, not equalized"))
    print({name: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for name, r in results.items()})
    for name in (AUTO, "rescaled channels, equalized"):
        r = results[name]
        assert 100 * (float_acc - r["accuracy"]) <= MAX_DROP_POINTS, (name, r)
        assert r["top1_agreement"] >= MIN_AGREEMENT, (name, r)
    assert results[AUTO]["rel_l2"] <= MAX_REL_L2, results[AUTO]
    # Equalization makes a network with channels 10x apart as good as the same graph of the
    # network as trained: the error it adds is within RESCALED_OVER_SAME of that graph's.
    robust, same = results["rescaled channels, equalized"], results[SAME_GRAPH]
    assert robust["rel_l2"] <= RESCALED_OVER_SAME * same["rel_l2"], (robust, same)
    # The control: the same rescaled model without equalization is far off, so the test
    # can tell equalization working from not.
    fragile = results["rescaled channels, not equalized"]
    assert fragile["rel_l2"] > 3 * robust["rel_l2"] and float_acc - fragile["accuracy"] > 0.1, fragile

    # The default's file is the candidate it reports choosing: that graph, named, on the same
    # calibration (and, for the per-block graph, measured on the same held-out inputs as
    # `int8_candidates` gives the search), computes the same logits.
    chosen = results[AUTO]["chosen"]
    # Compensated rounding keeps the plain graph's ops and cuts its error (both candidates
    # of the default's search, scored on its held-out images).
    rows = {row["graph"]: row for row in read_metadata(files[AUTO])["int8"]["candidates"]}
    assert rows["plain-compensated"]["rel_l2"] <= COMPENSATED_OVER_PLAIN * rows["plain"]["rel_l2"], rows
    named = export_tflite(train_form, "int8", calibration=xtr[:256], held_out=xtr[256:320], input="normalized",
                          output="logits", int8_graph=chosen)
    assert np.array_equal(TFLiteRunner(named)(xte), TFLiteRunner(files[AUTO])(xte)), chosen

    request.getfixturevalue("gpu_accelerator")  # the rest needs a Vulkan device
    default = files[AUTO]
    path = write_tflite(default, tmp_path / "digits_int8.tflite")
    report = check_gpu(path)
    assert report["fully_accelerated"] and report["static_problems"] == [], report
    # On the GPU the file keeps the same promise, against timm's own logits.
    gpu = run_on_gpu(path, xte)
    gpu_drop = 100 * (timm_acc - (gpu.argmax(-1) == yte).mean())
    gpu_rel_l2 = float(np.linalg.norm(gpu - timm_logits) / np.linalg.norm(timm_logits))
    print(f"GPU: {gpu_drop:.2f} points lost, relative L2 {gpu_rel_l2:.4f} against timm")
    assert gpu_drop <= MAX_DROP_POINTS and gpu_rel_l2 <= MAX_REL_L2
