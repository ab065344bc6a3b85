"""Strips (aspect ratio beyond 8) are resized only where the centre crop keeps them: the same
pixels as resizing the whole image, to 1/255, without its memory."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras_repvgg.core.preprocessing as preprocessing
from keras_repvgg.core.configs import get_variant


@pytest.mark.parametrize("arch", ["repvgg_a0", "repvgg_d2se"])  # bilinear crop 0.875; bicubic crop 1.0
@pytest.mark.parametrize("shape", [(20, 900), (900, 20), (7, 601), (3, 299)])
def test_a_strip_gives_the_pixels_of_the_whole_resize(arch, shape, tmp_path, monkeypatch):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "strip.png")
    p = get_variant(arch).preprocessing
    assert max(shape) / min(shape) > preprocessing.LONG_SIDE_LIMIT  # the strip path is taken
    cropped_first = preprocessing.load_image(tmp_path / "strip.png", p, normalize=False)
    monkeypatch.setattr(preprocessing, "LONG_SIDE_LIMIT", 10**9)  # the whole image resized, then cropped
    whole = preprocessing.load_image(tmp_path / "strip.png", p, normalize=False)
    assert cropped_first.shape == whole.shape == (p.input_size, p.input_size, 3)
    assert np.abs(cropped_first - whole).max() <= 1


# Runs in a fresh process: the peak resident memory (ru_maxrss) while decoding the strip, from a
# peak reset to the process's size just before, with the address space capped 1 GiB above what
# the imports took, so that a broken shortcut fails fast instead of taking gigabytes from the
# tests running beside it.
PEAK_SCRIPT = r"""
import json, resource, sys
import numpy as np
import keras_repvgg.core.preprocessing as preprocessing

def peak():  # bytes (Linux counts ru_maxrss in KiB)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

preprocessing.load_image(sys.argv[2], "repvgg_a0", normalize=False)  # every code path loaded once
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30 if hard == resource.RLIM_INFINITY else min(vm + 2**30, hard), hard))
try:
    with open("/proc/self/clear_refs", "w") as f:  # the peak starts again from the current size
        f.write("5")
except OSError:  # not allowed here: the peak so far (the imports') stays the baseline, a looser bound
    pass
before = peak()
try:
    x = preprocessing.load_image(sys.argv[1], "repvgg_a0", normalize=False)
except MemoryError:  # over the cap
    print(json.dumps({"over_the_cap": True}))
    sys.exit()
after = peak()
heavy = sorted(m for m in ("tensorflow", "keras", "torch", "timm", "jax") if m in sys.modules)
print(json.dumps({"over_the_cap": False, "before": before, "after": after, "shape": list(x.shape), "heavy": heavy,
                  "values": np.unique(x.reshape(-1, 3), axis=0).tolist()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resets and reads the peak through /proc/self")
def test_a_long_strip_is_cheap(tmp_path):
    """50,000 x 2 pixels: resized whole, the shorter side to 256 (224 / 0.875), it would be
    6,400,000 x 256 pixels, 6.55 GB in Pillow's 4 bytes a pixel; decoded in a fresh process,
    the peak resident memory grows by less than 64 MiB, a hundredth of that."""
    width, height = 50_000, 2
    Image.new("RGB", (width, height), (10, 200, 30)).save(tmp_path / "long.png")
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "small.png")
    p = get_variant("repvgg_a0").preprocessing
    scaled = math.floor(p.input_size / p.crop_pct)
    whole = int(width * scaled / height) * scaled * 4  # what resizing the whole strip allocates
    assert whole > 6.5e9
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "long.png"), str(tmp_path / "small.png")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert not report["over_the_cap"], "decoding the strip needed more than 1 GiB"
    grown = report["after"] - report["before"]
    print(f"peak {report['before'] / 2**20:.1f} MiB before, grew by {grown / 2**10:.0f} KiB "
          f"(whole resize: {whole / 2**30:.2f} GiB)")
    assert report["heavy"] == []  # numpy and Pillow only
    assert report["shape"] == [p.input_size, p.input_size, 3] and report["values"] == [[10, 200, 30]]
    assert grown < 64 * 2**20 and grown < whole / 100
