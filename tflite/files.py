"""A .tflite file's associated files (labels.txt, keras_repvgg.json) and its atomic writing.

The files are appended as a zip, TFLite's associated-file layout: flatbuffer readers ignore
trailing bytes, zip readers find the archive at the end. No TensorFlow here.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Optional, Sequence

from keras_repvgg.core.atomic import atomic_path
from keras_repvgg.core.description import LABELS_FILE, METADATA_FILE


def attach_files(data: bytes, labels: Optional[Sequence[str]] = None, metadata: Optional[dict] = None) -> bytes:
    """Append labels.txt and our metadata as a zip, TFLite's associated-file layout.

    Flatbuffer readers ignore trailing bytes; zip readers find the archive at the end.
    """
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for name, text in ((LABELS_FILE, "\n".join(labels or []) + "\n" if labels else None),
                           (METADATA_FILE, json.dumps(metadata, indent=1) if metadata else None)):
            if text is not None:
                # A fixed timestamp: the same model exports to the same bytes.
                z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), text)
    return data + archive.getvalue()


def attach_labels(data: bytes, labels: Sequence[str]) -> bytes:
    return attach_files(data, labels=labels)


def _read(data: bytes, name: str) -> Optional[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return z.read(name).decode()
    except (zipfile.BadZipFile, KeyError):
        return None


def read_labels(data: bytes) -> Optional[list[str]]:
    """The labels stored in the file, or None."""
    text = _read(data, LABELS_FILE)
    return text.splitlines() if text is not None else None


def read_metadata(data: bytes) -> Optional[dict]:
    """How the file wants its input (see `export_tflite`), or None for files made elsewhere."""
    text = _read(data, METADATA_FILE)
    return json.loads(text) if text is not None else None


def write_tflite(data: bytes, path: "str | os.PathLike[str]") -> Path:
    """Write .tflite bytes atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
