"""Fixtures. The shared helpers live in `helpers`; importing it here loads torch and timm
before any test module imports TensorFlow (the other order crashes in triton's import).

With KERAS_REPVGG_NUMPY_ONLY=1 (the unit tests in tests/unit), TensorFlow, Keras, torch
and timm cannot be imported at all, which proves those tests need numpy only.
"""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
NUMPY_ONLY = os.environ.get("KERAS_REPVGG_NUMPY_ONLY") == "1"
HEAVY = ("tensorflow", "keras", "tf_keras", "torch", "timm", "torchvision", "ai_edge_litert")

if NUMPY_ONLY:
    class _Blocked:
        """A meta-path finder that refuses the heavy frameworks."""

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ImportError(f"{name} is blocked: these tests must run on numpy alone")
            return None

    sys.meta_path.insert(0, _Blocked())
else:
    import helpers  # noqa: F401  (torch and timm first)


# The longest files first, as measured in a clean-clone run of 2026-12-01: the order of the
# files within one pytest process (tests/run.py orders and groups whole files itself, from
# tests/durations.json).
LONGEST_FIRST = ("test_tflite_export.py", "test_converters_parity.py", "test_multiworker.py", "test_hardening.py",
                 "test_train_evaluate.py", "test_tflite_int8_trained.py", "test_tflite_int8_graphs.py",
                 "test_description.py", "test_readme.py", "test_tflite_mediapipe.py", "test_keras_pipelines.py",
                 "test_onnx_export.py", "test_kerashub.py", "test_reparameterization.py", "test_grouped_conv.py",
                 "test_serving.py", "test_backend_api.py", "test_backend_roundtrip.py", "test_backend_parity.py",
                 "test_beam.py")


def pytest_collection_modifyitems(config, items):
    if NUMPY_ONLY:  # only the unit tests can run without the frameworks
        items[:] = [item for item in items if "unit" in item.path.parts]
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


def pytest_sessionfinish(session, exitstatus):
    loaded = sorted(name for name in HEAVY if name in sys.modules)
    if NUMPY_ONLY and loaded:  # loaded before the blocker (by a plugin), or it failed
        raise RuntimeError(f"numpy-only tests ran with {loaded} imported")


@pytest.fixture(scope="session")
def a0_checkpoints():
    """An A0 in both forms (training and reparameterized) with timm's logits on 64 px input."""
    from helpers import random_images, timm_checkpoint, timm_model, timm_reference

    x = random_images(2, 64, seed=3)
    return {"model": timm_model("repvgg_a0", seed=7), "train": timm_checkpoint("repvgg_a0", seed=7),
            "fused": timm_checkpoint("repvgg_a0", seed=7, form="fused"), "x": x,
            "logits": timm_reference("repvgg_a0", 7, x)}


# --- LiteRT's GPU accelerator -------------------------------------------------------------

GPU_HOW_TO = (
    "LiteRT's GPU accelerator needs a Vulkan device; on Debian bookworm install Mesa 25's "
    "lavapipe as .ci/run does (apt-get install -t bookworm-backports mesa-vulkan-drivers), "
    "or run `bash .ci/run`"
)


@pytest.fixture(scope="session")
def gpu_accelerator(tmp_path_factory):
    """Skip GPU-delegate tests where no Vulkan device exists, with one line saying how
    to get one; under CI (CI=true) that is a failure, so that CI always proves the GPU path.

    The probe compiles a one-op model (an ADD), which any working accelerator takes, so
    a refusal here means no device, never a problem of our exports.
    """
    import tensorflow as tf

    from keras_repvgg.tflite import check_gpu

    root = tmp_path_factory.mktemp("gpu_probe")
    probe = tf.Module()
    probe.add_one = tf.function(lambda image: {"output": image + 1.0},
                                input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32, name="image")])
    tf.saved_model.save(probe, str(root / "add"), signatures={"serving_default": probe.add_one})
    path = root / "add.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(root / "add")).convert())
    report = check_gpu(path)
    if not report.get("compiled"):
        message = f"no GPU accelerator ({report.get('error', 'not compiled')}): {GPU_HOW_TO}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return report
