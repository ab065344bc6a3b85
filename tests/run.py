"""The whole test run, as CI runs it: `python tests/run.py` (extra arguments go to every pytest pass).

Each step stops the run if it fails, and each prints how long it took:
1. ruff and mypy;
2. the unit tests of the numpy core, with TensorFlow, Keras, torch and LiteRT blocked from import;
3. every test under Keras 3 (TensorFlow backend);
4. under tf-keras (Keras 2), all but the `slow` and `keras3_only` tests (see pyproject.toml's markers);
5. and 6. `tests/backends` under Keras 3 on JAX and on PyTorch.
Passes 3 to 6 use two worker processes (pytest-xdist), which take whole files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-q"]
# Whole files to the two workers; xdist hands them out by their number of tests, most first.
# (Handing them out longest first, --no-loadscope-reorder with conftest.py's order, was tried
# on 2026-12-01: its one clean-clone run took the Keras 3 pass 1,164 s against 1,067 s.)
XDIST = ["-n", "2", "--dist", "loadfile"]

STEPS: list[tuple[str, dict[str, str], list[str]]] = [
    ("ruff", {}, [sys.executable, "-m", "ruff", "check", "."]),
    ("mypy", {}, [sys.executable, "-m", "mypy"]),
    ("unit (numpy only)", {"KERAS_REPVGG_NUMPY_ONLY": "1"}, [*PYTEST, "tests/unit"]),
    ("Keras 3", {}, [*PYTEST, *XDIST]),
    ("tf-keras", {"TF_USE_LEGACY_KERAS": "1"}, [*PYTEST, *XDIST, "-m", "not slow and not keras3_only"]),
    ("JAX", {"KERAS_BACKEND": "jax"}, [*PYTEST, *XDIST, "tests/backends"]),
    ("PyTorch", {"KERAS_BACKEND": "torch"}, [*PYTEST, *XDIST, "tests/backends"]),
]


def main(extra: list[str]) -> int:
    start = time.monotonic()
    for name, env, command in STEPS:
        if "pytest" in command:
            command = [*command, *extra]
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        began = time.monotonic()
        code = subprocess.call(command, cwd=ROOT, env={**os.environ, **env})
        free = shutil.disk_usage(ROOT).free / 2**30  # a full disk fails tests far from its cause
        print(f"== {name}: {'passed' if code == 0 else f'failed (exit status {code})'} "
              f"in {time.monotonic() - began:.0f} s; {free:.1f} GiB of disk free", flush=True)
        if code != 0:
            return code
    print(f"== all passed in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
