"""Hardening: broken and hostile checkpoints (fuzzed), images of every odd kind, interrupted
exports, determinism, and one-line command-line errors."""

from __future__ import annotations

import copy
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from keras_repvgg.converters import CheckpointError, NonFiniteWeightsError, ShapeMismatchError, convert
from keras_repvgg.front.cli import PARTIAL, main

from helpers import assert_close_to_timm, make_timm_model, random_images

SIZE = 32


@pytest.fixture(scope="module")
def timm_a0():
    """The timm A0 the fuzzed checkpoints come from, built once: each case loads the values
    its file holds into a copy of it."""
    return make_timm_model("repvgg_a0", seed=21, num_classes=10)


@pytest.fixture(scope="module")
def a0_tensors(timm_a0, tmp_path_factory):
    """timm A0's training-form state dict as numpy arrays, and a folder to mutate it in;
    the hub offline, with an empty cache, meanwhile."""
    from huggingface_hub import constants

    tensors = {k: v.detach().numpy().copy() for k, v in timm_a0.state_dict().items()}
    folder = tmp_path_factory.mktemp("fuzz")
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setattr(constants, "HF_HUB_OFFLINE", True)
    patch.setattr(constants, "HF_HUB_CACHE", str(folder / "empty_hub_cache"))
    yield tensors, folder
    patch.undo()


def _save(tensors: dict, path: Path, bf16: tuple[str, ...] = ()) -> Path:
    from safetensors.torch import save_file

    out = {}
    for key, value in tensors.items():
        t = torch.from_numpy(np.ascontiguousarray(value))
        out[key] = t.to(torch.bfloat16) if key in bf16 else t
    save_file(out, str(path))
    return path


MUTATIONS = ("float16", "bfloat16", "integer", "nan", "inf", "nan-allowed", "drop", "extra", "rename",
             "reshape", "truncate", "header-byte", "empty", "no-checkpoint-folder", "hub-offline")
# Every float tensor of A0 is needed, so a dropped one must fail too.
MUST_FAIL = {"integer", "nan", "inf", "drop", "extra", "rename", "reshape", "truncate", "empty",
             "no-checkpoint-folder", "hub-offline"}
MUST_CONVERT = {"float16", "bfloat16", "nan-allowed"}


def _as_read(tensors: dict, kind: str, key: str) -> dict:
    """The float32 tensors a correct converter reads from the mutated file: half precision
    rounded as the file holds it; for every other kind, the file's original values (a
    header byte that leaves the file readable must leave its numbers alone)."""
    import torch

    t = dict(tensors)
    if kind == "float16":
        t[key] = t[key].astype(np.float16).astype(np.float32)
    elif kind == "bfloat16":
        t[key] = torch.from_numpy(t[key]).to(torch.bfloat16).float().numpy()
    return t


class _Draws:
    """A case's choices (which key, which element, where to cut, which byte) from a fixed
    generator, one seed per kind; `_Hypothesis` draws them from hypothesis instead."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def key(self, keys: list[str]) -> str:
        return keys[int(self.rng.integers(len(keys)))]

    def integer(self, low: int, high: int, label: str) -> int:  # low..high, both included
        return int(self.rng.integers(low, high + 1))


class _Hypothesis(_Draws):
    def __init__(self, data):
        self.data = data

    def key(self, keys: list[str]) -> str:
        return self.data.draw(st.sampled_from(keys), label="key")

    def integer(self, low: int, high: int, label: str) -> int:
        return self.data.draw(st.integers(low, high), label=label)


def _mutate(kind: str, tensors: dict, folder: Path, draws: _Draws) -> tuple[list[str], str, dict]:
    """Write the mutated checkpoint; return (extra CLI args, source, what it should read as)."""
    keys = sorted(k for k, v in tensors.items() if v.dtype == np.float32 and v.size > 1)
    key = draws.key(keys)
    t = dict(tensors)
    path = folder / f"{kind}.safetensors"
    extra: list[str] = []
    if kind == "float16":
        t[key] = t[key].astype(np.float16)
    elif kind == "bfloat16":
        return extra, str(_save(t, path, bf16=(key,))), _as_read(tensors, kind, key)
    elif kind == "integer":
        t[key] = t[key].astype(np.int32)
    elif kind in ("nan", "inf", "nan-allowed"):
        t[key] = t[key].copy()
        index = draws.integer(0, t[key].size - 1, "index")
        t[key].flat[index] = np.nan if kind != "inf" else -np.inf
        extra = ["--allow-nonfinite"] if kind == "nan-allowed" else []
    elif kind == "drop":
        del t[key]
    elif kind == "extra":
        t["stages.9.extra.weight"] = np.ones(3, np.float32)
    elif kind == "rename":
        t[key + "_renamed"] = t.pop(key)
    elif kind == "reshape":
        t[key] = t[key].reshape(-1)[: t[key].size - 1]
    elif kind == "empty":
        path.write_bytes(b"")
        return extra, str(path), {}
    elif kind == "no-checkpoint-folder":
        (folder / "empty_folder").mkdir(exist_ok=True)
        (folder / "empty_folder" / "config.json").write_text(json.dumps({"architecture": "repvgg_a0"}))
        return extra, str(folder / "empty_folder"), {}
    elif kind == "hub-offline":
        return extra, "timm/repvgg_a0.not_in_the_cache", {}
    _save(t, path)
    raw = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(raw[: draws.integer(0, len(raw) - 1, "cut")])
    elif kind == "header-byte":
        header_len = struct.unpack("<Q", raw[:8])[0]
        at = draws.integer(0, 8 + header_len - 1, "offset")
        byte = draws.integer(0, 255, "byte")
        path.write_bytes(raw[:at] + bytes([byte]) + raw[at + 1 :])
    return extra, str(path), (t if kind == "nan-allowed" else _as_read(tensors, kind, key))


@pytest.fixture(scope="module")
def fuzz_log():
    """Kinds tried and how each ended ("refused" or "converted"), per origin ("fixed" or
    "random"): filled by the cases below once their checks passed, read by the coverage test."""
    return {"fixed": {}, "random": {}}


def _convert_or_fail_cleanly(kind: str, draws: _Draws, tensors: dict, folder: Path, timm_a0) -> str:
    """One fuzzed checkpoint through the command line: refused with a clean CheckpointError,
    or converted to what timm computes with the file's values. Returns how it ended."""
    extra, source, expected = _mutate(kind, tensors, folder, draws)
    out_dir = Path(tempfile.mkdtemp(prefix=f"out-{kind}-", dir=folder))  # one per case: no case sees another's
    out = out_dir / "out.keras"
    try:
        code = main(["--debug", "convert", source, "--input-size", str(SIZE), *extra, "-o", str(out)])
    except CheckpointError as err:  # the documented family; nothing else may escape
        assert kind not in MUST_CONVERT, err
        message = str(err)
        if kind not in ("hub-offline",):
            assert Path(source).name in message, message
        if kind in ("nan", "inf"):
            assert isinstance(err, NonFiniteWeightsError) and "NaN or infinite" in message
        left = sorted(p.name for p in out_dir.iterdir())
        assert not left, f"an output or temporary was left behind: {left}"
        return "refused"
    assert code == 0 and kind not in MUST_FAIL, kind
    assert sorted(p.name for p in out_dir.iterdir()) == ["out.keras"]  # and no temporary beside it
    # What converted computes what timm computes with the values the file holds.
    from keras_repvgg.models.backend import keras

    x = random_images(2, SIZE, seed=5)
    ours = np.asarray(keras.models.load_model(out)(x, training=False))
    out.unlink()
    reference = _timm_logits(timm_a0, expected, x)
    if kind == "nan-allowed":
        assert np.array_equal(np.isfinite(ours), np.isfinite(reference)), (ours, reference)
        ours, reference = ours[np.isfinite(ours)], reference[np.isfinite(reference)]
        if not reference.size:
            return "converted"  # NaN reached every logit, in both
    assert_close_to_timm(ours, reference)
    return "converted"


def _timm_logits(timm_a0, tensors: dict, x: np.ndarray) -> np.ndarray:
    from helpers import torch_logits

    model = copy.deepcopy(timm_a0)  # the module's model stays as it was built
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()})
    return torch_logits(model, x)


def _log(fuzz_log: dict, origin: str, kind: str, outcome: str) -> None:
    fuzz_log[origin].setdefault(kind, []).append(outcome)


@pytest.mark.parametrize("kind", MUTATIONS)
def test_every_mutation_kind_converts_or_fails_cleanly(a0_tensors, timm_a0, fuzz_log, kind):
    """Each kind on every run, its key, element, cut or byte drawn from a seed of its own."""
    tensors, folder = a0_tensors
    outcome = _convert_or_fail_cleanly(kind, _Draws(zlib.crc32(kind.encode())), tensors, folder, timm_a0)
    _log(fuzz_log, "fixed", kind, outcome)


RANDOM_CASES = 15


@settings(max_examples=RANDOM_CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(MUTATIONS), data=st.data())
def test_fuzzed_checkpoints_convert_or_fail_cleanly(a0_tensors, timm_a0, fuzz_log, kind, data):
    """Random cases on top of the fixed ones: any kind, any key, element, cut or byte."""
    tensors, folder = a0_tensors
    _log(fuzz_log, "random", kind, _convert_or_fail_cleanly(kind, _Hypothesis(data), tensors, folder, timm_a0))


def test_fuzz_covers_every_mutation_kind(fuzz_log):
    """After the two tests above (pytest runs a file's tests in order, and --dist loadfile keeps
    them in one worker): every kind passed its fixed case, refused or converted as it must,
    and the random cases ran. Run alone, it fails: the log is empty."""
    print("fuzz cases:", {origin: dict(sorted(kinds.items())) for origin, kinds in fuzz_log.items()})
    fixed = fuzz_log["fixed"]
    assert sorted(fixed) == sorted(MUTATIONS), f"kinds without a passing fixed case: {set(MUTATIONS) - set(fixed)}"
    assert all(len(outcomes) == 1 for outcomes in fixed.values()), fixed
    assert {kind for kind, outcomes in fixed.items() if outcomes == ["refused"]} >= MUST_FAIL
    assert {kind for kind, outcomes in fixed.items() if outcomes == ["converted"]} >= MUST_CONVERT
    assert sum(len(outcomes) for outcomes in fuzz_log["random"].values()) >= RANDOM_CASES


def test_a_tensor_of_the_wrong_rank_is_a_shape_error(a0_tensors):
    """Found by the fuzzer: a kernel of the wrong rank crashed variant inference (IndexError)."""
    tensors, folder = a0_tensors
    t = dict(tensors)
    t["stages.1.0.conv_kxk.conv.weight"] = t["stages.1.0.conv_kxk.conv.weight"].reshape(-1)
    path = _save(t, folder / "wrong_rank.safetensors")
    with pytest.raises(ShapeMismatchError, match=r"wrong_rank.safetensors.*'stages\.1\.0\.conv_kxk\.conv\.weight'.*4-D"):
        convert(path, input_size=SIZE)


def test_nonfinite_weights_convert_when_allowed(a0_tensors):
    tensors, folder = a0_tensors
    t = dict(tensors)
    t["head.fc.bias"] = t["head.fc.bias"].copy()
    t["head.fc.bias"][3] = np.inf
    path = _save(t, folder / "inf_bias.safetensors")
    with pytest.raises(NonFiniteWeightsError, match=r"'head.fc.bias' holds 1 NaN or infinite values"):
        convert(path, input_size=SIZE)
    logits = convert(path, input_size=SIZE, allow_nonfinite=True).predict(random_images(1, SIZE), verbose=0)
    assert np.isinf(logits[0, 3]) and np.isfinite(np.delete(logits[0], 3)).all()


# --- images -------------------------------------------------------------------------------

def _odd_images(folder: Path) -> dict[str, tuple[Path, bool]]:
    """name -> (file, readable)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    files: dict[str, tuple[Path, bool]] = {}

    def add(name, readable, writer):
        path = folder / name
        writer(path)
        files[name] = (path, readable)

    add("rgb.jpg", True, lambda p: Image.fromarray(rgb).save(p, quality=95))
    add("gray.png", True, lambda p: Image.fromarray(rgb[..., 0]).save(p))
    # With a black (K) channel of its own: Pillow's conversion of RGB to CMYK leaves K at 0.
    cmyk = np.dstack([255 - rgb, rng.integers(0, 128, (60, 80, 1), dtype=np.uint8)])
    add("cmyk.jpg", True, lambda p: Image.frombytes("CMYK", (80, 60), cmyk.tobytes()).save(p, quality=95))
    add("rgba.png", True, lambda p: Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(p))
    add("palette.gif", True, lambda p: Image.fromarray(rgb).convert("P").save(p))
    add("gray16.png", True, lambda p: Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(p))
    add("corrupt.jpg", False, lambda p: p.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 3))
    add("truncated.jpg", False, lambda p: p.write_bytes((folder / "rgb.jpg").read_bytes()[:300]))
    add("empty.png", False, lambda p: p.write_bytes(b""))
    # 12,000 x 10,000 pixels of one colour: a tiny file that would decode to 360 MB.
    add("huge.png", False, lambda p: Image.new("L", (12_000, 10_000)).save(p, optimize=True))
    return files


def _timm_pixels(image: Image.Image, config: dict) -> np.ndarray:
    """timm's eval transform (what tests/test_predict.py holds `load_image` to) of Pillow's
    own RGB conversion of the image, back in 0-255 pixel steps."""
    from timm.data import create_transform

    normalized = create_transform(**config)(image.convert("RGB")).numpy().transpose(1, 2, 0)
    return (normalized * np.asarray(config["std"]) + np.asarray(config["mean"])) * 255


def test_predict_reads_odd_images_or_records_their_error(tmp_path, capsys, timm_a0):
    """Every odd mode decodes to the pixels timm's transform gives Pillow's RGB conversion of
    the same file (at the model's 32 px, which predict feeds, and A0's own 224 px), and
    predict's probabilities are the model's on exactly those pixels."""
    from timm.data import resolve_data_config

    from keras_repvgg.core.preprocessing import load_image
    from keras_repvgg.front.predict import load_predictor

    files = _odd_images(tmp_path)
    from helpers import timm_checkpoint

    source = timm_checkpoint("repvgg_a0", seed=22)  # make_timm_model("repvgg_a0", seed=22), made once for the run
    assert main(["convert", str(source), "--input-size", str(SIZE), "-o", str(tmp_path / "a0.keras")]) == 0
    capsys.readouterr()
    predictor = load_predictor(tmp_path / "a0.keras")
    p = predictor.preprocessing
    configs = {size: resolve_data_config({"input_size": (3, size, size)}, model=timm_a0) for size in (SIZE, 224)}
    for config in configs.values():  # timm's own transform for A0, which the model's must be
        assert (config["crop_pct"], config["interpolation"]) == (p.crop_pct, p.interpolation), config
        assert np.allclose(config["mean"], p.mean) and np.allclose(config["std"], p.std), config
    assert p.input_size == SIZE

    gray8 = load_image(files["gray.png"][0], "repvgg_a0", normalize=False)
    gray16 = load_image(files["gray16.png"][0], "repvgg_a0", normalize=False)
    assert np.array_equal(gray16, gray8)  # 16-bit (v * 257) is scaled down, not clipped at 255
    worst = 0.0
    for name, (path, readable) in files.items():
        code = main(["predict", str(tmp_path / "a0.keras"), str(path), "--json"])
        out, err = capsys.readouterr()
        record = json.loads(out)  # one image, one JSON line
        if readable:
            assert code == 0, (name, err)
            assert len(record["top"]) == 5
            # Pillow's RGB conversion clips 16-bit values at 255: the reference for the 16-bit
            # file is Pillow's conversion of the 8-bit image it was made from (its values / 257).
            reference_file = files["gray.png"][0] if name == "gray16.png" else path
            with Image.open(reference_file) as image:
                references = {size: _timm_pixels(image, config) for size, config in configs.items()}
            for size, reference in references.items():
                ours = load_image(path, p if size == SIZE else "repvgg_a0", normalize=False)
                diff = float(np.abs(ours - reference).max())
                worst = max(worst, diff)
                assert ours.shape == reference.shape == (size, size, 3) and diff <= 1e-3, (name, size, diff)
            expected = predictor.probabilities(references[SIZE][None].astype(np.float32))[0]
            for entry in record["top"]:
                assert abs(entry["probability"] - expected[entry["index"]]) <= 1e-5, (name, entry)
            assert min(e["probability"] for e in record["top"]) >= np.sort(expected)[-5] - 1e-5, name  # the top 5
        else:  # a record with the error naming the file, and the status that says some failed
            assert code == PARTIAL and record["error"].startswith(f"{path}: ") and "top" not in record, (name, out)
            assert len(err.strip().splitlines()) == 1 and "1 of 1 images could not be read" in err, (name, err)
    print(f"odd images: worst difference from timm's transform of Pillow's RGB, {worst:.2e} of a 0-255 step")


def test_savedmodel_image_signature_decodes_or_rejects(tmp_path):
    """The in-graph decoder on the same files: readable ones decode, the rest are InvalidArgument."""
    import tensorflow as tf

    from keras_repvgg import get_variant
    from keras_repvgg.exports.serving import decode_image

    files = _odd_images(tmp_path)
    preprocessing = get_variant("repvgg_a0").preprocessing
    for name, (path, readable) in files.items():
        if name == "huge.png":
            continue  # TensorFlow decodes it (360 MB); the SavedModel has no size limit
        try:
            pixels = decode_image(tf.constant(path.read_bytes()), preprocessing).numpy()
        except tf.errors.InvalidArgumentError:
            assert not readable or name == "cmyk.jpg", name
            continue
        assert readable, name
        assert pixels.shape == (224, 224, 3) and 0 <= pixels.min() and pixels.max() <= 255


# --- determinism --------------------------------------------------------------------------

# Run in a process of its own: the same conversion and exports as the test below makes in its
# own process, written to files, with the process's string hash (to prove its hash seed differs).
_OTHER_PROCESS = """
import sys
from pathlib import Path

import numpy as np

from keras_repvgg.front.cli import main
from keras_repvgg.converters import convert
from keras_repvgg.tflite import export_tflite

checkpoint, out, size = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
assert main(["convert", str(checkpoint), "--input-size", size, "-o", str(out / "a0.keras")]) == 0
deploy, train = convert(checkpoint, input_size=int(size)), convert(checkpoint, input_size=int(size), form="train")
calibration = np.load(out / "calibration.npy")
for mode, model in (("float32", deploy), ("float16", deploy), ("int8", train)):
    (out / f"{mode}.tflite").write_bytes(export_tflite(model, mode, calibration=calibration if mode == "int8" else None))
(out / "hash.txt").write_text(str(hash("keras-repvgg")))
"""


def test_conversion_and_export_are_deterministic(tmp_path):
    """The same weights (the .keras file's, read back: its zip holds a save time) and the same
    bytes of the float32, float16 and int8 files, in this process and in another one with
    another hash seed. The float files are also made twice here, which would show state
    that one export leaves for the next (a layer-name counter, say); int8, whose search
    makes five files, once in each process: its export also runs after others there."""
    from keras_repvgg.models.backend import keras
    from keras_repvgg.tflite import export_tflite

    from helpers import timm_checkpoint

    path = timm_checkpoint("repvgg_a0", seed=23)  # make_timm_model("repvgg_a0", seed=23), made once for the run
    calibration = random_images(24, SIZE, seed=3)  # int8 scores its candidate graphs on 4 of them
    other_dir = tmp_path / "other_process"
    other_dir.mkdir()
    np.save(other_dir / "calibration.npy", calibration)
    # A hash seed other than this process's (random unless PYTHONHASHSEED is set).
    env = {**os.environ, "PYTHONHASHSEED": "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"}
    log = other_dir / "log.txt"  # a file, not a pipe: a full pipe would stall it until we read
    with open(log, "w") as log_file:
        other = subprocess.Popen([sys.executable, "-c", _OTHER_PROCESS, str(path), str(other_dir), str(SIZE)],
                                 env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:  # the other process works while this one does
        first, second = (convert(path, input_size=SIZE) for _ in range(2))
        assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights(), strict=True))
        exports = {}
        for mode in ("float32", "float16"):
            a, b = (export_tflite(m, mode) for m in (first, second))
            assert a == b, mode  # byte-identical files
            exports[mode] = a
        exports["int8"] = export_tflite(convert(path, input_size=SIZE, form="train"), "int8", calibration=calibration)
        other.wait(timeout=600)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert other.returncode == 0, log.read_text()[-3000:]
    assert (other_dir / "hash.txt").read_text() != str(hash("keras-repvgg")), "the hash seeds did not differ"
    weights = keras.models.load_model(other_dir / "a0.keras").get_weights()
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(first.get_weights(), weights, strict=True)), \
        "other weights in another process"
    for mode, data in exports.items():
        assert (other_dir / f"{mode}.tflite").read_bytes() == data, f"{mode}: other bytes in another process"


# --- command line -------------------------------------------------------------------------

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "keras_repvgg", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_errors_are_one_line_without_tensorflow_noise(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    # Exit status 2 alone would pass for any ValueError: each line must say what was wrong.
    cases = [
        (["convert", "missing.safetensors", "-o", "x.keras"], "missing.safetensors: no such file or folder"),
        (["convert", "broken.safetensors", "-o", "x.keras"], "broken.safetensors: not a readable safetensors file"),
        (["convert", "broken.safetensors", "--arch", "repvgg_z9", "-o", "x.keras"], "Unknown RepVGG variant 'repvgg_z9'"),
        (["export", "tflite", "missing.keras", "-o", "x.tflite"], "missing.keras: no such .keras file"),
    ]
    for args, says in cases:
        run = _cli(*args, cwd=tmp_path)
        assert run.returncode == 2, run
        assert run.stderr.startswith("keras-repvgg: error: ") and run.stderr.count("\n") == 1, run.stderr
        assert says in run.stderr and "Traceback" not in run.stderr, run.stderr
    debug = _cli("--debug", "convert", "broken.safetensors", "-o", "x.keras", cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.safetensors"]


def _hidden(out_dir: Path) -> list[Path]:
    return [p for p in out_dir.rglob(".*")] if out_dir.exists() else []


def _signal_while_writing(command: list[str], out_dir: Path, sig: int) -> bool:
    """Run the command and send it `sig` the moment its hidden temporary output appears.

    Returns whether the signal landed during the write: the temporary still there just
    before the signal, and the process ended by it (not finished on its own)."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if _hidden(out_dir):
            writing = bool(_hidden(out_dir)) and proc.poll() is None
            proc.send_signal(sig)
            proc.wait(timeout=120)
            return writing and proc.returncode != 0
        time.sleep(0.001)
    proc.kill()
    proc.wait(timeout=120)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["keras", "tflite", "savedmodel"])
def test_an_export_killed_while_writing_leaves_nothing(tmp_path, fmt):
    """SIGKILL or SIGTERM the command line while its output is being written (its hidden
    temporary exists): never a partial output; after SIGTERM no temporary either."""
    from helpers import timm_checkpoint

    # make_timm_model("repvgg_b1g4", seed=24), made once for the three formats (only read here).
    source = timm_checkpoint("repvgg_b1g4", seed=24)
    out_dir = tmp_path / "out"
    target = out_dir / {"keras": "model.keras", "tflite": "model.tflite", "savedmodel": "serving"}[fmt]
    verb = [*(["convert"] if fmt == "keras" else ["export", fmt]), str(source), "--input-size", "64", "-o", str(target)]
    command = [sys.executable, "-m", "keras_repvgg", *verb]
    # The whole output, to compare the killed runs' leftovers with: the same command line, in
    # this process (a fresh one would only add TensorFlow's start-up; the killed runs need theirs).
    assert main(verb) == 0
    base = {Path("serving")}  # the SavedModel's base folder may exist without a version
    complete = {p.relative_to(out_dir) for p in out_dir.rglob("*")} - base
    for sig in (signal.SIGKILL, signal.SIGTERM):
        for _attempt in range(3):  # a write can finish between two looks: try again
            for p in sorted(out_dir.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            landed = _signal_while_writing(command, out_dir, sig)
            left = ({p.relative_to(out_dir) for p in out_dir.rglob("*")} if out_dir.exists() else set()) - base
            visible = {p for p in left if not any(part.startswith(".") for part in p.parts)}
            assert visible in (set(), complete), (sig, sorted(map(str, left)))
            landed = landed and not visible  # not renamed into place just before the signal
            if landed:
                break
        assert landed, f"{sig!r} never landed while {fmt} was being written"
        if sig == signal.SIGTERM:
            assert left == set(), left  # SIGTERM also removes the temporary
