"""Shared fixtures: timm reference models and the checkpoints our converter reads.

Checkpoints are made here, never downloaded: timm's own model with random
weights and random but sane BatchNorm statistics, saved with safetensors.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(2)

# timm publishes these eleven; the g2 variants exist only in the official repository.
TIMM_VARIANTS = [
    "repvgg_a0", "repvgg_a1", "repvgg_a2", "repvgg_b0", "repvgg_b1", "repvgg_b1g4",
    "repvgg_b2", "repvgg_b2g4", "repvgg_b3", "repvgg_b3g4", "repvgg_d2se",
]
G2_VARIANTS = ["repvgg_b1g2", "repvgg_b2g2", "repvgg_b3g2"]


def _g2_model(name: str):
    """The g2 variants built from timm's own RepVGG block config with groups=2."""
    from timm.models.byobnet import ByobNet, ByoModelCfg, _rep_vgg_bcfg

    widths = {"repvgg_b1g2": (2, 2, 2, 4), "repvgg_b2g2": (2.5, 2.5, 2.5, 5), "repvgg_b3g2": (3, 3, 3, 5)}
    cfg = ByoModelCfg(blocks=_rep_vgg_bcfg(wf=widths[name], groups=2), stem_type="rep", stem_chs=64)
    return ByobNet(cfg)


def make_timm_model(arch: str, seed: int = 0, num_classes: int = 1000):
    """timm's training-form model with random weights and randomized BatchNorm, in eval mode.

    BatchNorm weights stay in 0.3-0.8: near 1, the three summed branches would
    grow activations exponentially with depth.
    """
    torch.manual_seed(seed)
    if arch in G2_VARIANTS:
        model = _g2_model(arch)
    else:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.3)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
    # timm starts every bias at zero; random ones make the parity tests check where the
    # head's and squeeze-excitation's biases go (a generator of their own keeps the
    # BatchNorm statistics above what they were).
    biases = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=biases) * 0.2)
    return model.eval()


def sklearn_photos() -> list[Path]:
    """The two photographs scikit-learn ships (china.jpg, flower.jpg): real JPEGs to test on.

    Checked by name, so that a test looping over them can never loop over nothing."""
    import sklearn

    photos = sorted((Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg"))
    assert [p.name for p in photos] == ["china.jpg", "flower.jpg"], photos
    return photos


def reparameterized(model):
    return timm.utils.reparameterize_model(copy.deepcopy(model)).eval()


def torch_logits(model, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))))
    return out.numpy()


def save_checkpoint(model, path: Path) -> Path:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path


def save_official_checkpoint(model, path: Path) -> Path:
    """timm's state dict under the official RepVGG names, as a PyTorch pickle.

    The renaming is the documented correspondence between the two code bases,
    written out here independently of the converter's own mapping.
    """
    import re

    def official(key: str) -> str:
        key = re.sub(r"^stem\.", "stage0.", key)
        key = re.sub(r"^stages\.(\d)\.", lambda m: f"stage{int(m.group(1)) + 1}.", key)
        key = key.replace("head.fc.", "linear.")
        for timm_part, official_part in (
            ("conv_kxk", "rbr_dense"), ("conv_1x1", "rbr_1x1"), ("identity", "rbr_identity"),
            ("reparam_conv", "rbr_reparam"), ("attn.fc1", "se.down"), ("attn.fc2", "se.up"),
        ):
            key = key.replace(f".{timm_part}.", f".{official_part}.")
        return key

    torch.save({official(k): v for k, v in model.state_dict().items()}, str(path))
    return path


def keras_logits(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Normalized NHWC float32 input, as timm's eval transform produces."""
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def assert_close_to_timm(ours: np.ndarray, reference: np.ndarray, rel: float = 1e-4) -> float:
    """max |ours - timm| <= rel * max |timm|; returns the relative error."""
    scale = float(np.abs(reference).max())
    err = float(np.abs(ours - reference).max()) / scale
    assert ours.shape == reference.shape
    assert err <= rel, f"max abs diff is {err:.2e} of the logit scale {scale:.3g}"
    return err


@pytest.fixture(scope="session")
def a0_checkpoints(tmp_path_factory):
    """An A0 in both forms (training and reparameterized) with timm's logits on 64 px input."""
    root = tmp_path_factory.mktemp("a0")
    model = make_timm_model("repvgg_a0", seed=7)
    x = random_images(2, 64, seed=3)
    train = save_checkpoint(model, root / "a0_train.safetensors")
    fused = save_checkpoint(reparameterized(model), root / "a0_fused.safetensors")
    return {"model": model, "train": train, "fused": fused, "x": x, "logits": torch_logits(model, x)}


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
