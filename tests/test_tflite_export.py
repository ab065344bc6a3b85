"""TFLite export: CPU parity with Keras, op lists, GPU-delegate compatibility on LiteRT."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from keras_repvgg.converters import convert
from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.front.cli import main
from keras_repvgg.tflite import (
    ExportError,
    TFLiteRunner,
    evaluate_tflite,
    export_tflite,
    gpu_static_problems,
    model_ops,
    read_labels,
    write_tflite,
)
from keras_repvgg.tflite.int8_graphs import GRAPHS_BY_NAME

from helpers import KERAS3_ONLY, assert_close_to_timm, gpu_check, gpu_outputs, random_images, timm_checkpoint, timm_reference

# D2se (120M parameters) takes half a minute per export: marked slow, run in the Keras 3 pass.
ARCHS = ["repvgg_a0", "repvgg_b1g4", pytest.param("repvgg_d2se", marks=pytest.mark.slow)]
MODES = ["float32", "float16", "dynamic-int8", "int8"]


def cases(modes: list[str]) -> list:
    """Every mode on a plain (A0) and a grouped (B1g4) variant; under tf-keras, B1g4's float32
    only (its grouped conv is the Keras-made part; quantizing it is the converter's). What D2se
    adds is its squeeze-excitation ops: its float32 file shows them converted and run on the
    CPU and the GPU, and its int8 file from the training form (below) shows them quantized.
    Its other modes would repeat A0's and B1g4's checks at 120M parameters (four minutes)."""
    b1g4 = [("repvgg_b1g4", m) if m == "float32" else pytest.param("repvgg_b1g4", m, marks=KERAS3_ONLY)
            for m in modes]
    return [("repvgg_a0", m) for m in modes] + b1g4 + [pytest.param("repvgg_d2se", "float32", marks=pytest.mark.slow)]
SIZE = 64
# D2se at 48 px: its cost on the CPU interpreter and on LiteRT's GPU accelerator (about 8 s
# an image at 64 px on lavapipe) grows with the pixels, while what its files add here does
# not: the squeeze-excitation ops, converted, quantized and run. At 48 px (24, 12, 6, 3, 2
# px after the stem and the stages, as against 32, 16, 8, 4, 2) every block's
# squeeze-excitation still pools over more than one pixel, as at 64 px.
SIZES = {"repvgg_d2se": 48}
AS_THE_MODEL = {"input": "normalized", "output": "logits"}
SEED = 2  # of the timm models every test here converts
# On LiteRT's GPU accelerator (float16 arithmetic on lavapipe), against timm's float32 model:
# the largest logit difference, as a fraction of the logit scale, for float files; the
# relative L2 of the logits for int8 files (see docs/testing.md, "TFLite", for the spread).
GPU_FLOAT_REL = 2.5e-2
# int8 of these random-weight models, against Keras (CPU) or timm (GPU): measured relative L2
# 0.011-0.013 (A0) and 0.027-0.028 (B1g4) for dynamic-range and full int8 on the CPU
# interpreter, 0.013 for A0 on the GPU. litert-torch's int8 of a trained A0 gets 0.144.
INT8_REL_L2 = 0.06
GPU_INT8_REL_L2 = INT8_REL_L2
GPU_INT8_PROBABILITY = 0.02  # the default int8 file's probabilities, absolute


def size_of(arch: str) -> int:
    return SIZES.get(arch, SIZE)


def rel_l2(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def pixels_and_normalized(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """0-255 RGB pixels, and the same normalized as timm's transform does (ImageNet's mean and std)."""
    from keras_repvgg.core.configs import IMAGENET_MEAN, IMAGENET_STD

    pixels = np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.float32)
    return pixels, ((pixels / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype(np.float32)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Each (variant, mode) exported once, lazily: Keras model, held-out inputs, .tflite path."""
    root = tmp_path_factory.mktemp("tflite")
    models, cache = {}, {}

    def get(arch: str, mode: str):
        if arch not in models:
            path = timm_checkpoint(arch, seed=SEED)
            models[arch] = convert(path, input_size=size_of(arch))
        if (arch, mode) not in cache:
            calibration = random_images(24, size_of(arch), seed=9) if mode == "int8" else None
            # Normalized in, logits out: the network itself, compared on logits (the
            # default files, pixels in and probabilities out, are tested below and in MediaPipe).
            data = export_tflite(models[arch], mode, calibration=calibration, **AS_THE_MODEL)
            cache[arch, mode] = write_tflite(data, root / f"{arch}_{mode}.tflite")
        return models[arch], random_images(6, size_of(arch), seed=4), cache[arch, mode]

    return get


@pytest.mark.parametrize(("arch", "mode"), cases(MODES))
def test_cpu_interpreter_matches_keras(exports, arch, mode):
    model, held_out, path = exports(arch, mode)
    report = evaluate_tflite(path.read_bytes(), model, held_out)
    print(arch, mode, report)
    if mode == "float32":
        assert report["max_rel"] <= 1e-5
    elif mode == "float16":
        assert report["max_rel"] <= 1e-3
    else:
        # int8 weights: the error is bounded. Top-1 agreement is reported, not bounded, here:
        # a random-weight model's logits are near ties, so its argmax is noise.
        assert report["rel_l2"] <= INT8_REL_L2


@pytest.mark.parametrize("arch", ARCHS)
def test_ops_are_builtin_static_and_one_conv_per_block(exports, arch):
    model, _, path = exports(arch, "float32")
    data = path.read_bytes()
    ops = {op.name: op for op in model_ops(data)}
    assert "TRANSPOSE" not in ops and not any(n.startswith(("CUSTOM", "FLEX")) for n in ops)
    convs = [layer for layer in model.layers if type(layer).__name__ in ("Conv2D", "GroupedConv2D")]
    assert ops["CONV_2D"].count == len(convs)  # a grouped conv is one CONV_2D, not a split
    runner = TFLiteRunner(data)
    size = size_of(arch)
    assert list(runner.input["shape"]) == [1, size, size, 3]
    assert list(runner.input["shape_signature"]) == [1, size, size, 3]
    assert runner.output_name == "logits"


# Under tf-keras, A0's case: B1g4's quantized files are the converter's work on the same
# grouped conv (see `cases`); D2se's is slow-marked.
@pytest.mark.parametrize("arch", ["repvgg_a0", pytest.param("repvgg_b1g4", marks=KERAS3_ONLY),
                                  pytest.param("repvgg_d2se", marks=pytest.mark.slow)])
def test_int8_from_the_training_form_keeps_the_identity_apart(arch, tmp_path, request):
    """The identity-apart int8 graph (equalized) on every kind of block: plain, grouped,
    squeeze-excitation; against the training form it came from."""
    path, size = timm_checkpoint(arch, seed=SEED), size_of(arch)
    train = convert(path, input_size=size, form="train")
    data = export_tflite(train, "int8", calibration=random_images(24, size, seed=9),
                         int8_graph="identity-apart-equalized", **AS_THE_MODEL)
    ops = {op.name: op.count for op in model_ops(data)}
    blocks_with_identity = sum(1 for layer in train.layers if layer.name.endswith(".identity"))
    assert blocks_with_identity > 0 and ops["DEPTHWISE_CONV_2D"] == blocks_with_identity, ops
    report = evaluate_tflite(data, train, random_images(6, size, seed=4))
    print(arch, report)
    assert report["rel_l2"] <= 0.05  # measured 0.008-0.014 (A0, B1g4, D2se; the deploy graph's bound is INT8_REL_L2)
    request.getfixturevalue("gpu_accelerator")  # the rest needs a Vulkan device
    path = write_tflite(data, tmp_path / f"{arch}_int8.tflite")
    gpu = gpu_check(path)
    assert gpu["fully_accelerated"] and gpu["static_problems"] == [], gpu
    assert gpu["max_rel_diff"] <= 2.5e-2
    held_out = random_images(6, size, seed=4)
    error = rel_l2(gpu_outputs(path, held_out), timm_reference(arch, SEED, held_out))
    print(arch, "identity-apart int8 on the GPU against timm:", error)
    assert error <= 0.05


@KERAS3_ONLY  # the converter's quantization of the same weights
def test_sizes(exports):
    sizes = {mode: exports("repvgg_b1g4", mode)[2].stat().st_size for mode in MODES}
    print({mode: round(size / sizes["float32"], 4) for mode, size in sizes.items()})
    # Measured 0.5002, 0.2527 and 0.2516 (the weights; the ops and metadata are a few kB).
    assert 0.49 <= sizes["float16"] / sizes["float32"] <= 0.51
    assert 0.24 <= sizes["int8"] / sizes["float32"] <= 0.26
    assert 0.24 <= sizes["dynamic-int8"] / sizes["float32"] <= 0.26


@pytest.mark.parametrize(("arch", "mode"), cases(["float32", "float16", "int8"]))
def test_gpu_accelerator_runs_it_fully(exports, arch, mode, gpu_accelerator):
    _, held_out, path = exports(arch, mode)
    report = gpu_check(path)
    print(report)
    assert report["compiled"], report
    assert report["fully_accelerated"] and report["static_problems"] == []
    assert report["max_rel_diff"] <= 2.5e-2  # GPU computes in float16
    # And what the GPU computes is timm's model.
    gpu, reference = gpu_outputs(path, held_out), timm_reference(arch, SEED, held_out)
    print(arch, mode, "GPU against timm:", rel_l2(gpu, reference), np.abs(gpu - reference).max() / np.abs(reference).max())
    if mode == "int8":
        assert rel_l2(gpu, reference) <= GPU_INT8_REL_L2
    else:
        assert_close_to_timm(gpu, reference, rel=GPU_FLOAT_REL)


@pytest.mark.parametrize("mode", ["float32", "float16", "int8"])
def test_default_files_run_fully_on_the_gpu(exports, mode, tmp_path, gpu_accelerator):
    """What users get by default: 0-255 pixels in (normalized inside), probabilities out."""
    model, _, _ = exports("repvgg_a0", "float32")
    calibration = random_images(24, SIZE, seed=9) if mode == "int8" else None
    data = export_tflite(model, mode, calibration=calibration)
    ops = {op.name for op in model_ops(data)}
    assert "SOFTMAX" in ops and TFLiteRunner(data).output_name == "probabilities"
    path = write_tflite(data, tmp_path / f"a0_{mode}.tflite")
    report = gpu_check(path)
    assert report["fully_accelerated"] and report["static_problems"] == [], report
    # Pixels in, probabilities out on the GPU: timm's probabilities for the normalized pixels.
    pixels, normalized = pixels_and_normalized(4, seed=6)
    gpu, reference = gpu_outputs(path, pixels), softmax(timm_reference("repvgg_a0", SEED, normalized))
    logit_gap = np.abs(np.log(gpu + 1e-12) - np.log(reference))[reference > 1e-4].max()
    print(mode, "GPU probabilities against timm: max abs", np.abs(gpu - reference).max(), "log", logit_gap)
    if mode == "int8":  # its probabilities are quantized: compared as they are, not as logits
        assert np.abs(gpu - reference).max() <= GPU_INT8_PROBABILITY
    else:
        assert_close_to_timm(gpu, reference, rel=GPU_FLOAT_REL)


def test_dynamic_int8_is_flagged_for_gpu_delegates(exports, capsys):
    _, _, path = exports("repvgg_a0", "dynamic-int8")
    problems = gpu_static_problems(path.read_bytes())
    assert problems == ["FULLY_CONNECTED v12 (1x): the GPU delegate takes at most v9"]
    assert main(["check-gpu", str(path)]) == 1
    assert "FULLY_CONNECTED v12" in capsys.readouterr().out


# Under tf-keras, uint8 (camera pixels): int8 input and output is the converter's, from the same graph.
@pytest.mark.parametrize("io_dtype", ["uint8", pytest.param("int8", marks=KERAS3_ONLY)])
def test_int8_with_integer_io(exports, io_dtype):
    model, held_out, _ = exports("repvgg_a0", "int8")
    # uint8 is camera pixels (normalized inside); int8 is the model's own input, quantized.
    data = export_tflite(model, "int8", random_images(24, SIZE, seed=9), io_dtype=io_dtype, output="logits",
                         input="pixels" if io_dtype == "uint8" else "normalized")
    runner = TFLiteRunner(data)
    assert runner.input["dtype"] == np.dtype(io_dtype) and runner.output["dtype"] == np.dtype(io_dtype)
    ops = {op.name for op in model_ops(data)}
    assert "DEQUANTIZE" not in ops  # integer out: no float conversion at the end
    assert ("QUANTIZE" in ops) == (io_dtype == "uint8")  # uint8 in is requantized to int8
    report = evaluate_tflite(data, model, held_out)
    assert report["rel_l2"] <= INT8_REL_L2


def test_uint8_pixels_into_float_model_with_preprocessing(exports, tmp_path, request):
    model, _, _ = exports("repvgg_a0", "float32")
    path = timm_checkpoint("repvgg_a0", seed=SEED)
    rgb_model = convert(path, input_size=SIZE, include_preprocessing=True)
    labels = [f"class {i}" for i in range(1000)]
    data = export_tflite(rgb_model, "float32", io_dtype="uint8", labels=labels, output="logits")
    pixels = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.uint8)
    runner = TFLiteRunner(data)
    assert runner.input["dtype"] == np.uint8
    ours = runner(pixels.astype(np.float32))
    reference = rgb_model.predict(pixels.astype(np.float32), verbose=0)
    assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()
    assert read_labels(data) == labels
    with pytest.raises(KerasRepVGGError, match="2 label names for a 1000-class model"):
        export_tflite(rgb_model, "float32", labels=["a", "b"])
    request.getfixturevalue("gpu_accelerator")  # the rest needs a Vulkan device
    path = write_tflite(data, tmp_path / "u8.tflite")
    report = gpu_check(path)
    assert report["fully_accelerated"], report
    pixels, normalized = pixels_and_normalized(3, seed=0)
    assert_close_to_timm(gpu_outputs(path, pixels.astype(np.uint8)), timm_reference("repvgg_a0", SEED, normalized),
                         rel=GPU_FLOAT_REL)


def test_bad_requests_are_clear_errors(exports):
    model, _, _ = exports("repvgg_a0", "float32")
    with pytest.raises(ExportError, match="needs calibration data"):
        export_tflite(model, "int8")
    with pytest.raises(ExportError, match="at least 16 samples, got 5"):
        export_tflite(model, "int8", random_images(5, SIZE))
    with pytest.raises(ExportError, match=r"shape \(20, 32, 32, 3\)"):
        export_tflite(model, "int8", random_images(20, 32))
    with pytest.raises(ExportError, match="quantization must be one of"):
        export_tflite(model, "int4")
    # Choosing the graph holds out a fifth (at least 4): 18 samples leave 14 to calibrate on.
    with pytest.raises(ExportError, match="holds out 4 of the 18 calibration samples"):
        export_tflite(model, "int8", random_images(18, SIZE))
    with pytest.raises(ExportError, match=r"int8_graph must be 'auto' or one of \['plain'"):
        export_tflite(model, "int8", random_images(16, SIZE), int8_graph="fastest")
    # A fused model has no identity branch left to keep apart.
    with pytest.raises(ExportError, match="'identity-apart' cannot be made from a model in the deploy form"):
        export_tflite(model, "int8", random_images(16, SIZE), int8_graph="identity-apart")


@KERAS3_ONLY  # the int8 search and the command line; under tf-keras: test_int8_from_the_training_form_keeps_the_identity_apart
def test_cli_export_with_image_folder_and_gpu_check(tmp_path, capsys, request):
    path = tmp_path / "a0.safetensors"
    shutil.copy(timm_checkpoint("repvgg_a0", seed=SEED), path)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "a0_int8.tflite"
    args = ["export", "tflite", str(path), "--input-size", str(SIZE), "--quantization", "int8",
            "--calibration", str(images), "--gpu", "-o", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "top-1 agreement" in printed
    # From the unfused checkpoint all four graphs are candidates, each reported.
    assert "int8 graph: " in printed and all(f"{name} " in printed for name in GRAPHS_BY_NAME), printed
    assert TFLiteRunner(out.read_bytes()).input["shape"][1] == SIZE
    # A 1000-class checkpoint that names no classes carries no labels: 1000 is not proof of ImageNet.
    assert read_labels(out.read_bytes()) is None

    failed = tmp_path / "failed.tflite"
    assert main(["export", "tflite", str(path), "--quantization", "int8", "-o", str(failed)]) == 2
    assert not failed.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "a0.safetensors", "a0_int8.tflite", "images"]
    request.getfixturevalue("gpu_accelerator")  # the rest needs a Vulkan device
    assert "GPU: fully accelerated" in printed, printed
