"""A phone's file from any model source, in one call: what `keras-repvgg export tflite` does.

`export_tflite` turns a Keras model into bytes; this is the job around it that Python users
and the command line share: which form of the model to load (int8 is made from the
training form, whose branches are still apart, when the source is a checkpoint), the
calibration and held-out images from a folder, the atomic write, and the held-out error.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from keras_repvgg.core.errors import AlreadyFusedError


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """`export_tflite`'s choices, as the command line offers them (its choices come from here)."""

    quantization: str = "float32"
    io_dtype: str = "float32"
    batch_size: int = 1
    equalize: Optional[bool] = None
    output: str = "probabilities"
    input: str = "pixels"
    int8_graph: str = "auto"
    int8_workers: Optional[int] = None  # the search's conversions at once (export_tflite's)

    @staticmethod
    def choices() -> dict[str, tuple[str, ...]]:
        """The values each option takes (numpy only: no TensorFlow import)."""
        from keras_repvgg.tflite.export import IO_DTYPES, QUANTIZATIONS
        from keras_repvgg.tflite.int8_graphs import AUTO, GRAPHS_BY_NAME

        return {"quantization": QUANTIZATIONS, "io_dtype": IO_DTYPES, "int8_graph": (AUTO, *GRAPHS_BY_NAME),
                "output": ("probabilities", "logits"), "input": ("pixels", "normalized")}


@dataclasses.dataclass
class PhoneExport:
    """What `export_for_phone` made: the file, the Keras model it came from, the held-out
    inputs its error was measured on, that error (`evaluate_tflite`'s report) and notes."""

    path: Path
    data: bytes
    model: Any
    held_out: np.ndarray
    report: dict[str, Any]
    notes: list[str]


def load_for_export(source: "str | os.PathLike[str]", quantization: str, arch: Optional[str] = None,
                    **convert_options: Any) -> tuple[Any, list[str]]:
    """The Keras model to export from `source` (a .keras file or any checkpoint source), and
    notes. For int8, a checkpoint is loaded in the training form: the exporter can then keep
    the identity branch apart where that is more accurate (see `int8_graphs`)."""
    from keras_repvgg.core.artifacts import ArtifactKind, file_kind
    from keras_repvgg.front.loading import KERAS_MODELS, load_artifact

    if quantization == "int8" and file_kind(source, KERAS_MODELS) is ArtifactKind.CHECKPOINT:
        try:
            return load_artifact(source, KERAS_MODELS, arch, form="train", **convert_options).model, []
        except AlreadyFusedError:
            note = "the checkpoint is already fused; int8 uses the one-conv-per-block graph"
            return load_artifact(source, KERAS_MODELS, arch, **convert_options).model, [note]
    return load_artifact(source, KERAS_MODELS, arch, **convert_options).model, []


CALIBRATION_LIMIT = 500  # images read from a calibration folder at most (a sample beyond): memory stays bounded


def calibration_images(
    folder: "str | os.PathLike[str] | None", model
) -> tuple[Optional[np.ndarray], np.ndarray, list[str]]:
    """(calibration, held-out, notes) as the model takes them: a folder's images (searched
    recursively, so a training folder of class subfolders serves; at most CALIBRATION_LIMIT,
    drawn with a fixed seed), a fifth of them (at least 4) held out at random to choose the
    int8 graph on and report the error. Unreadable images are skipped, each with a note.
    Without a folder, no calibration and 8 random held-out inputs (the float files' error is
    still measured)."""
    from keras_repvgg.core.errors import ImageError
    from keras_repvgg.core.preprocessing import image_files, load_image
    from keras_repvgg.core.transform import PIXEL_MAX, denormalize
    from keras_repvgg.models.model import describe

    description = describe(model)
    shape = tuple(model.input_shape[1:])
    normalize = not description.takes_pixels
    rng = np.random.default_rng(0)
    if not folder:
        held_out = rng.standard_normal((8,) + shape).astype(np.float32)
        if not normalize:  # the model takes 0-255 RGB: the same draws, as pixels
            held_out = np.clip(denormalize(held_out, description.preprocessing), 0, PIXEL_MAX).astype(np.float32)
        return None, held_out, []
    files = image_files(folder)
    notes = []
    if len(files) > CALIBRATION_LIMIT:
        notes.append(f"calibrating on {CALIBRATION_LIMIT} of the {len(files)} images in {folder}, drawn at random")
        files = [files[i] for i in sorted(rng.choice(len(files), CALIBRATION_LIMIT, replace=False))]
    images = []
    for path in files:
        try:
            images.append(load_image(path, description.preprocessing, normalize=normalize))
        except ImageError as err:
            notes.append(f"calibration: skipped {err}")
    if not images:
        return np.zeros((0,) + shape, np.float32), np.zeros((0,) + shape, np.float32), notes
    stacked = np.stack(images).astype(np.float32)
    held = np.zeros(len(stacked), bool)
    held[rng.permutation(len(stacked))[:max(4, len(stacked) // 5)]] = True
    return stacked[~held], stacked[held], notes


def export_for_phone(source: "str | os.PathLike[str]", output: "str | os.PathLike[str]",
                     options: ExportOptions = ExportOptions(), calibration: "str | os.PathLike[str] | None" = None,
                     arch: Optional[str] = None, progress: Optional[Callable[[str], None]] = None,
                     **convert_options: Any) -> PhoneExport:
    """Load `source`, export it to `output` (atomically) with `options`, calibrating int8 on
    the images of the folder `calibration`, and measure the file against the Keras model on
    the held-out inputs. `progress`: `export_tflite`'s (a line as each int8 candidate starts).
    `convert_options`: `convert_checkpoint`'s (input_size, ...)."""
    from keras_repvgg.tflite import evaluate_tflite, export_tflite, write_tflite

    model, notes = load_for_export(source, options.quantization, arch, **convert_options)
    calibration_set, held_out, calibration_notes = calibration_images(calibration, model)
    notes = [*notes, *calibration_notes]
    data = export_tflite(model, calibration=calibration_set,
                         held_out=held_out if calibration_set is not None else None,
                         progress=progress, **dataclasses.asdict(options))
    path = write_tflite(data, output)
    return PhoneExport(path, data, model, held_out, evaluate_tflite(data, model, held_out), notes)
