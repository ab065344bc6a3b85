"""Running .tflite files with LiteRT (ai_edge_litert) on the CPU, and comparing with Keras."""

from __future__ import annotations

from typing import Any

import numpy as np


class TFLiteRunner:
    """The `serving_default` signature of a .tflite model on LiteRT's CPU interpreter.

    Its one input and one output, whatever their names (ours are `image` and `logits`;
    other converters' differ). Quantized inputs and outputs are (de)quantized here,
    so callers pass and get floats.
    """

    def __init__(self, data: bytes, num_threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=data, num_threads=num_threads)
        self._runner = self._interpreter.get_signature_runner("serving_default")
        (self.input_name, self.input), = self._runner.get_input_details().items()
        (self.output_name, self.output), = self._runner.get_output_details().items()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        size = self.input["shape"][0]
        outputs = [self._run(batch[i : i + size]) for i in range(0, len(batch), size)]
        return np.concatenate(outputs)

    def _run(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        scale, zero = self.input["quantization"]
        if dtype != np.float32:
            if scale:  # a quantized integer input
                x = np.round(x / scale + zero)
            x = np.clip(x, np.iinfo(dtype).min, np.iinfo(dtype).max)
        y = self._runner(**{self.input_name: x.astype(dtype)})[self.output_name]
        scale, zero = self.output["quantization"]
        if self.output["dtype"] != np.float32 and scale:
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)


def compare_logits(ours: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Max abs difference, relative L2 of the logits, and top-1 agreement."""
    diff = ours - reference
    return {
        "max_abs": float(np.abs(diff).max()),
        "max_rel": float(np.abs(diff).max() / max(np.abs(reference).max(), 1e-30)),
        "rel_l2": float(np.linalg.norm(diff) / max(np.linalg.norm(reference), 1e-30)),
        "top1_agreement": float(np.mean(ours.argmax(-1) == reference.argmax(-1))),
        "samples": int(len(reference)),
    }


def evaluate_tflite(data: bytes, model, inputs: np.ndarray) -> dict[str, Any]:
    """The .tflite model's error against the Keras float model on the same inputs."""
    runner = TFLiteRunner(data)
    reference = np.asarray(model.predict(inputs, verbose=0, batch_size=8))
    return compare_logits(runner(inputs), reference)
