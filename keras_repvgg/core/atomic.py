"""Writing outputs atomically: to a temporary name beside the target, then one rename.

A failed or interrupted export therefore leaves either the old file or none,
never half of a new one. No Keras here: the TFLite writer and the converters use it too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: "str | os.PathLike[str]") -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffixes); rename it to target on success.

    The writer may make a file or a folder there (a SavedModel version). Nothing exists at
    the temporary path until the writer makes it, and the clean-up covers it from then on:
    a signal that unwinds the writer (SIGTERM, Ctrl-C) leaves no temporary behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    # A random hidden name beside the target, not created here (128 bits: no collision).
    tmp_path = target.parent / f".{target.stem}.{secrets.token_hex(16)}{suffix}"
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():  # the write failed or was interrupted
            _remove_settled(tmp_path)


# A SIGTERM (or Ctrl-C) unwinds Python at once, but TensorFlow can let an op it was running
# (a SavedModel's variables being written and merged) finish in its own threads, so files can
# still appear in the temporary while it is being removed: the likely cause of what CI saw
# once, an empty `variables` folder left in a SavedModel's temporary after SIGTERM.
SETTLE_SECONDS = 0.2
SETTLE_TIMEOUT = 10.0


def _remove_settled(path: Path) -> None:
    """Remove path (a file or a folder), again until it has stayed gone for SETTLE_SECONDS."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        time.sleep(SETTLE_SECONDS)
        if not path.exists() or time.monotonic() > deadline:
            return
