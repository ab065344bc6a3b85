"""One backend's side of the .keras round trip (run as a script, KERAS_BACKEND set).

    roundtrip_child.py FOLDER [--write CHECKPOINT]

With --write, converts CHECKPOINT and saves FOLDER/<backend>.keras. Then loads every
.keras file in FOLDER and saves its outputs on FOLDER/input.npy and its description as
FOLDER/<file>.on.<backend>.npy and .json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import keras_repvgg
from keras_repvgg.converters import convert_checkpoint
from keras_repvgg.models.backend import BACKEND


def main(folder: Path, checkpoint: "str | None") -> None:
    if checkpoint:
        model = convert_checkpoint(checkpoint, form="train", input_size=64, include_preprocessing=True).model
        keras_repvgg.save_model(model, folder / f"{BACKEND}.keras")
    x = np.load(folder / "input.npy")
    for path in sorted(folder.glob("*.keras")):
        loaded = keras_repvgg.load_model(path)
        out = loaded(x, training=False)
        np.save(folder / f"{path.stem}.on.{BACKEND}.npy", np.asarray(out.detach() if hasattr(out, "detach") else out))
        (folder / f"{path.stem}.on.{BACKEND}.json").write_text(json.dumps(keras_repvgg.describe(loaded).to_dict()))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--write" else None)
