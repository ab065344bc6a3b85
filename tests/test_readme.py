"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_install_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    install, test = block[0], block[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test in ci
    assert "pip install" in install and test == "python tests/run.py"
    # The runner holds the passes the README and docs/testing.md describe.
    from run import CHECKS, PASSES, plan

    checks = {name: env for name, env, _ in CHECKS}
    passes = {name: (env, args) for name, env, args, _ in PASSES}
    assert list(checks) == ["ruff", "mypy", "unit (numpy only)"]
    assert checks["unit (numpy only)"] == {"KERAS_REPVGG_NUMPY_ONLY": "1"}
    assert list(passes) == ["Keras 3", "tf-keras", "JAX", "PyTorch"]
    assert passes["tf-keras"] == ({"TF_USE_LEGACY_KERAS": "1"}, ["-m", "not slow and not keras3_only"])
    assert passes["JAX"][0] == {"KERAS_BACKEND": "jax"} and passes["PyTorch"][0] == {"KERAS_BACKEND": "torch"}
    # Each test file in one job of each pass that runs it: tests/backends on JAX and PyTorch
    # (its conftest skips it on TensorFlow), every other file on Keras 3 and tf-keras.
    jobs = plan([])
    every = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py"))
    backends = [f for f in every if f.startswith("tests/backends/")]
    others = [f for f in every if f not in backends]
    assert backends and others
    for name, files in (("Keras 3", others), ("tf-keras", others), ("JAX", backends), ("PyTorch", backends)):
        ran = sorted(f for job in jobs if job.name.startswith(f"{name}:") for f in job.files)
        assert ran == files, name


def _main_job_commands(readme: str) -> list[str]:
    """The `keras-repvgg` lines of the first block and of "The main job, step by step"."""
    first = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()[2]
    section = readme.split("## The main job, step by step", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    steps = [line.split("#")[0].strip() for line in block.splitlines()]
    return [first] + [step for step in steps if step.startswith("keras-repvgg")]


@pytest.mark.slow
def test_the_main_job_runs_as_written(tmp_path):
    """Every main-job command, verbatim, against a hub cache laid out here (offline)."""
    import shutil

    import sklearn
    from PIL import Image
    from timm.models import save_for_hf

    from helpers import make_timm_model

    readme = (ROOT / "README.md").read_text()
    commands = _main_job_commands(readme)
    assert len(commands) == 6 and "timm/repvgg_a0.rvgg_in1k" in commands[0]

    home = tmp_path / "hf_home"
    repo = home / "hub" / "models--timm--repvgg_a0.rvgg_in1k"
    commit = "0" * 40
    save_for_hf(make_timm_model("repvgg_a0", seed=12), repo / "snapshots" / commit, safe_serialization=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)

    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    photos = sorted((Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg"))
    rng = np.random.default_rng(0)
    for i in range(24):  # crops of two real photographs, to calibrate int8 on
        with Image.open(photos[i % 2]) as photo:
            x, y = rng.integers(0, 300), rng.integers(0, 150)
            photo.crop((x, y, x + 320, y + 260)).save(work / "photos" / f"{i}.jpg")
    shutil.copy(photos[0], work / "cat.jpg")
    with Image.open(photos[1]) as photo:
        photo.save(work / "dog.png")

    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    for command in commands:
        run = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{command}\n{run.stderr[-2000:]}"
        if "--gpu" in command:
            assert "GPU: fully accelerated" in run.stdout
        if "keras-repvgg predict" in command:  # timm's ImageNet-1k checkpoint: ImageNet's names
            from keras_repvgg import imagenet_labels

            shown = re.findall(r"^  \d+\. (.+) \((\d+)\): ", run.stdout, re.M)
            assert len(shown) == 6 and all(name == imagenet_labels()[int(i)] for name, i in shown), run.stdout
    produced = {p.name for p in work.iterdir()}
    assert {"repvgg_a0.keras", "repvgg_a0_fp16.tflite", "repvgg_a0_int8.tflite", "serving"} <= produced
    assert (work / "serving" / "repvgg_a0" / "1" / "saved_model.pb").is_file()
