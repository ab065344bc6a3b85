"""Shared test helpers: timm reference models and the checkpoints our converter reads.

Checkpoints are made here, never downloaded: timm's own model with random
weights and random but sane BatchNorm statistics, saved with safetensors.
torch and timm are imported here, before any test imports TensorFlow (the other
order crashes in triton's import); conftest imports this module first.
"""

from __future__ import annotations

import copy
import os
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# One thread per test process where several share the cores: tests/run.py sets these for its
# jobs (see ONE_THREAD there); a hand-run `pytest -n 2` gets them here. Read when torch and
# TensorFlow start, and inherited by the subprocesses that tests start.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") != "1":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

# Run in the Keras 3 pass only (see pyproject.toml's markers and tests/run.py).
KERAS3_ONLY = pytest.mark.keras3_only

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


# --- one cache of checkpoints and timm's logits for the whole run -----------------------
# Every xdist worker and every pass (Keras 3, tf-keras, JAX, torch) asks for the same few
# timm models with the same seeds: each is made, saved and run once, then read from here.
# A file is written under a temporary name and renamed into place, so that two workers
# making the same one at once each read a whole file. The key covers the code that makes
# the models and the torch and timm versions, so an edit never reads a stale file.
CACHE = Path(os.environ.get("KERAS_REPVGG_TEST_CACHE") or Path(__file__).resolve().parents[1] / ".pytest_cache" / "keras-repvgg")
CHECKPOINT_FORMS = ("train", "fused", "official-train", "official-deploy")


def _cache_key() -> str:
    import hashlib
    import inspect

    code = "".join(inspect.getsource(f) for f in (_g2_model, make_timm_model, reparameterized, save_checkpoint,
                                                    save_official_checkpoint, torch_logits))
    return hashlib.sha256(f"{code}{torch.__version__}{timm.__version__}".encode()).hexdigest()[:16]


def _prune_other_keys(keep: str) -> None:
    """Files made by other code or other versions are never read again: remove them (the
    big variants' checkpoints take gigabytes)."""
    import shutil

    for folder in CACHE.glob("*"):
        if folder.is_dir() and folder.name != keep:
            shutil.rmtree(folder, ignore_errors=True)


def _cached(name: str, write) -> Path:
    key = _cache_key()
    if not (CACHE / key).exists():
        _prune_other_keys(key)
    path = CACHE / key / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{os.getpid()}.{name}")
        try:
            write(temporary)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    return path


def variant_seed(arch: str) -> int:
    """A variant's own checkpoint seed: the tests that reuse each other's cached checkpoints and
    timm logits (parity, ONNX's D2se) take it from here, so that they find the same files."""
    return zlib.crc32(arch.encode()) % 1000


def timm_checkpoint(arch: str, seed: int = 0, form: str = "train", num_classes: int = 1000) -> Path:
    """`make_timm_model(arch, seed, num_classes)` saved once for the run: `train`, or `fused`
    (timm's reparameterization), as safetensors. Tests copy it before changing it; they never
    write here. The official `.pth` forms are not kept (see `derived_checkpoint`)."""
    assert form in ("train", "fused"), form

    def write(path: Path) -> None:
        model = timm_model(arch, seed, num_classes) if form == "fused" else make_timm_model(arch, seed, num_classes)
        save_checkpoint(reparameterized(model) if form == "fused" else model, path)

    return _cached(f"{arch}-seed{seed}-{num_classes}-{form}.safetensors", write)


def derived_checkpoint(arch: str, seed: int, form: str, folder: Path, num_classes: int = 1000) -> Path:
    """The cached training-form model written into `folder` in another form: `fused`, or the
    official `.pth` (`official-train`, `official-deploy`). Made afresh, not cached: for every
    variant they would add 10 GB to the cache, which filled CI's disk."""
    assert form in CHECKPOINT_FORMS, form
    model = timm_model(arch, seed, num_classes)
    if form in ("fused", "official-deploy"):
        model = reparameterized(model)
    if form.startswith("official"):
        return save_official_checkpoint(model, folder / f"{arch}-{form}.pth")
    return save_checkpoint(model, folder / f"{arch}-{form}.safetensors")


def timm_model(arch: str, seed: int = 0, num_classes: int = 1000):
    """The model `make_timm_model` gives, its weights read from the cached checkpoint."""
    from safetensors.torch import load_file

    with torch.device("meta"):  # built without initializing weights that are replaced at once
        model = _g2_model(arch) if arch in G2_VARIANTS else timm.create_model(arch, num_classes=num_classes)
    model.load_state_dict(load_file(str(timm_checkpoint(arch, seed, "train", num_classes))), assign=True)
    return model.eval()


def timm_reference(arch: str, seed: int, x: np.ndarray, num_classes: int = 1000, form: str = "train") -> np.ndarray:
    """timm's logits for `x` from `make_timm_model(arch, seed, num_classes)` (`form="fused"`:
    after timm's own reparameterization), computed once for the run."""
    import hashlib

    assert form in ("train", "fused"), form
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes() + str(x.shape).encode()).hexdigest()[:16]

    def write(path: Path) -> None:
        model = timm_model(arch, seed, num_classes)
        with open(path, "wb") as f:
            np.save(f, torch_logits(reparameterized(model) if form == "fused" else model, x))

    return np.load(_cached(f"{arch}-seed{seed}-{num_classes}-{form}-logits-{digest}.npy", write))


def checkpoint_size(path: Path) -> int:
    """How many numbers a safetensors file holds, from its header alone."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return sum(int(np.prod(f.get_slice(key).get_shape())) for key in f.keys())


def _digest(*parts: bytes) -> str:
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:24]


def gpu_check(path: Path) -> dict:
    """`check_gpu` of the file, once per distinct file in the run: LiteRT's GPU accelerator
    (software Vulkan here) is slow, and the passes export many byte-identical files."""
    import json

    from keras_repvgg.tflite import check_gpu

    class NotCompiled(Exception):
        pass

    def write(out: Path) -> None:
        report = check_gpu(path)
        if not report.get("compiled"):
            raise NotCompiled(report)  # no device, or a refusal: reported, never kept
        report.pop("path", None)
        out.write_text(json.dumps(report))

    try:
        report = json.loads(_cached(f"gpu-check-{_digest(Path(path).read_bytes())}.json", write).read_text())
    except NotCompiled as refused:
        report = refused.args[0]
    return {**report, "path": str(path)}


def gpu_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """`run_on_gpu(path, x)`, once per distinct file and input in the run."""
    from keras_repvgg.tflite import run_on_gpu

    def write(out: Path) -> None:
        with open(out, "wb") as f:
            np.save(f, run_on_gpu(path, x))

    key = _digest(Path(path).read_bytes(), np.ascontiguousarray(x).tobytes(), str((x.shape, x.dtype)).encode())
    return np.load(_cached(f"gpu-outputs-{key}.npy", write))


def keras_logits(model, x: np.ndarray) -> np.ndarray:
    out = model(x, training=False)
    # Keras' torch backend returns tensors that track gradients: numpy wants them detached.
    return np.asarray(out.detach().cpu() if hasattr(out, "detach") else out)


def randomize_keras_batchnorm(model, seed: int = 0) -> None:
    """Random but sane statistics in every BatchNormalization layer of a Keras model (as
    `make_timm_model` gives timm's), so that a freshly built training form stays finite."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.3, 0.8, n), rng.normal(0, 0.1, n),
                rng.normal(0, 0.1, n), rng.uniform(0.5, 2.0, n),
            ])


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


def photo_crops(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n crops and scales of scikit-learn's two photographs (JPEG, PNG, WebP; 40-300 px a side),
    in two nested folders, plus images in odd modes: CMYK, 16-bit grayscale, palette, grayscale,
    RGBA and a 3000 x 9 strip. Returns them all, sorted."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sklearn_photos()]
    paths = []
    for i in range(n):
        photo = photos[i % 2]
        w, h = int(rng.integers(40, 400)), int(rng.integers(40, 400))
        x, y = int(rng.integers(0, photo.width - w)), int(rng.integers(0, photo.height - h))
        crop = photo.crop((x, y, x + w, y + h))
        scale = float(rng.uniform(0.3, 1.5))
        crop = crop.resize((max(8, int(w * scale)), max(8, int(h * scale))))
        suffix = (".jpg", ".png", ".webp")[i % 3]
        path = folder / f"set{i % 2}" / f"crop{i:04d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path)
        paths.append(path)
    rgb = photos[0].resize((160, 120))
    odd = {
        "cmyk.jpg": rgb.convert("CMYK"), "palette.gif": rgb.convert("P"), "gray.png": rgb.convert("L"),
        "rgba.png": rgb.convert("RGBA"), "strip.png": photos[1].resize((3000, 9)),
        "gray16.png": Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257),
    }
    for name, image in odd.items():
        image.save(folder / name)
        paths.append(folder / name)
    return sorted(paths)


def unreadable_images(folder: Path) -> list[Path]:
    """Files named as images that no decoder reads: corrupt, truncated, empty, text, 120 megapixels."""
    from PIL import Image

    jpeg = folder / "whole.jpg"
    Image.open(sklearn_photos()[0]).save(jpeg)
    files = {
        "corrupt.jpg": b"\xff\xd8\xff\xe0 not really a JPEG" * 3, "truncated.jpg": jpeg.read_bytes()[:2000],
        "empty.png": b"", "text.png": b"plain text, not an image\n",
    }
    jpeg.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    Image.new("L", (12_000, 10_000)).save(folder / "huge.png", optimize=True)
    return sorted(folder / name for name in [*files, "huge.png"])


def assert_same_top_k(ours: np.ndarray, reference: np.ndarray, k: int = 5, rtol: float = 0.0, atol: float = 0.0,
                      what: str = "") -> float:
    """Two runs of one model agree on its top k classes, near-ties allowed; returns the largest
    difference as a fraction of the tolerance.

    `ours` and `reference` are (images, classes) probabilities. Kernel libraries (XNNPACK,
    oneDNN, Eigen) and batch sizes round differently, so classes whose probabilities nearly tie
    may swap places: the order is not compared. Instead every class's probability must agree
    within `atol + rtol * reference`, which catches a wrong model or a wrong class anywhere,
    and the two top-k sets must be equal but for classes within twice the tolerance at the
    k-th probability (each side may move by it) of the reference's k-th: only a near-tie at
    the edge of the top k may fall in or out of it.
    """
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape and ours.ndim == 2, (what, ours.shape, reference.shape)
    assert np.isfinite(ours).all() and np.isfinite(reference).all(), what
    assert atol > 0 or rtol > 0, "a tolerance is needed: near-ties are what this check allows"
    diff, tolerance = np.abs(ours - reference), atol + rtol * np.abs(reference)
    excess = np.divide(diff, tolerance, out=np.where(diff > 0, np.inf, 0.0), where=tolerance > 0)
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    assert excess[worst] <= 1, (
        f"{what}: image {worst[0]}, class {worst[1]}: probability {ours[worst]:.6g} against {reference[worst]:.6g}, "
        f"beyond atol {atol:g} + rtol {rtol:g}")
    for i, (row, ref) in enumerate(zip(ours, reference, strict=True)):
        top, ref_top = ({int(c) for c in np.argsort(-x, kind="stable")[:k]} for x in (row, ref))
        kth = float(np.sort(ref)[-k])
        tie = 2 * (atol + rtol * kth)
        apart = sorted(c for c in top ^ ref_top if abs(ref[c] - kth) > tie)
        assert not apart, (
            f"{what}: image {i}: top {k} {sorted(top)} against {sorted(ref_top)}; classes {apart} differ by more "
            f"than {tie:.3g} from the {k}th probability {kth:.6g}, not a near-tie")
    return float(excess[worst])



def digits_backbone_checkpoint(seed: int = 0) -> Path:
    """`benchmarks.digits.digits_backbone(seed)` (timm's A0 trained on digits 4-9), saved with
    safetensors once for the run: the pretrained starting point of the `train` tests."""
    import hashlib
    import inspect

    from benchmarks import digits

    code = "".join(inspect.getsource(f) for f in (digits.digits_backbone, digits.digit_pixels, digits.train_timm_a0))
    version = hashlib.sha256(code.encode()).hexdigest()[:8]
    return _cached(f"digits-4-9-a0-seed{seed}-{version}.safetensors",
                   lambda path: save_checkpoint(digits.digits_backbone(seed), path))


def onnx_runtime_outputs(files: list[Path], x: np.ndarray, work: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict]:
    """Each .onnx file run by ONNX Runtime in a fresh process (tests/onnx_child.py) on the batch
    `x` and on its first image alone: [(batch outputs, one-image outputs)] and, per file, its
    input's and output's names and shapes and its metadata as ONNX Runtime reads them."""
    import json
    import subprocess
    import sys

    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "inputs.npy", x)
    child = Path(__file__).resolve().parent / "onnx_child.py"
    run = subprocess.run([sys.executable, str(child), str(work), *map(str, files)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    with np.load(work / "outputs.npz") as out:
        results = [(out[f"{i}.batch"], out[f"{i}.one"]) for i in range(len(files))]
    return results, {Path(k): v for k, v in report.items()}


def trained_timm(arch: str, x: np.ndarray, y: np.ndarray, epochs: int = 10, seed: int = 0):
    """`benchmarks.digits.train_timm(arch, x, y, epochs, seed)`, its weights saved once for the
    run (the torch training is the same in every pass; only the Keras side differs)."""
    import inspect

    from safetensors.torch import load_file

    from benchmarks import digits

    code = inspect.getsource(digits.train_timm).encode()
    key = _digest(code, np.ascontiguousarray(x).tobytes(), str((x.shape, x.dtype)).encode(),
                  np.ascontiguousarray(y).tobytes(), str((y.shape, y.dtype, arch, epochs, seed)).encode())
    path = _cached(f"trained-{arch}-{key}.safetensors",
                   lambda out: save_checkpoint(digits.train_timm(arch, x, y, epochs, seed), out))
    with torch.device("meta"):  # built without initializing weights that are replaced at once
        model = timm.create_model(arch, num_classes=10)
    model.load_state_dict(load_file(str(path)), assign=True)
    return model.eval()


def timm_fused_forms(arch: str, seed: int, x: np.ndarray, folder: Path, num_classes: int = 1000) -> dict:
    """What `derived_checkpoint` gives in its three forms, and `timm_reference(..., form="fused")`'s
    logits on `x`, from one load of the cached model and one fusion by timm: `derived_checkpoint`
    loads and deep-copies the model and timm fuses it afresh for each form, which took seconds
    each for the big variants. The same files and logits: timm's `reparameterize_model` of the
    same weights, here in place on the loaded model (it deep-copies a model only to keep the
    caller's). Returns {"official-train": path, "fused": path, "official-deploy": path,
    "fused_logits": array}."""
    from unittest import mock

    model = timm_model(arch, seed, num_classes)
    out: dict = {"official-train": save_official_checkpoint(model, folder / f"{arch}-official-train.pth")}
    # timm's fusion makes each fused conv as a fresh nn.Conv2d, randomly initialized (kaiming, seconds
    # for the big variants) and at once given the fused kernel and bias: the initialization is skipped.
    with mock.patch.object(torch.nn.Conv2d, "reset_parameters", lambda self: None):
        fused = timm.utils.reparameterize_model(model, inplace=True).eval()
    out["fused"] = save_checkpoint(fused, folder / f"{arch}-fused.safetensors")
    out["official-deploy"] = save_official_checkpoint(fused, folder / f"{arch}-official-deploy.pth")
    out["fused_logits"] = torch_logits(fused, x)
    return out
