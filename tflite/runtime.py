"""Running .tflite files with LiteRT (ai_edge_litert) on the CPU, and comparing with Keras."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from keras_repvgg.core.machine import usable_cores


class TFLiteRunner:
    """The `serving_default` signature of a .tflite model on LiteRT's CPU interpreter.

    It runs on `num_threads` threads, by default every core the process may use. Its one
    input and one output, whatever their names (ours are `image` and `logits`;
    other converters' differ). Quantized inputs and outputs are (de)quantized here,
    so callers pass and get floats. before_softmax=True gives the input of the file's
    final SOFTMAX, where it ends in one (the logits inside a probabilities file), instead
    of its output.
    """

    def __init__(self, data: bytes, num_threads: Optional[int] = None, before_softmax: bool = False):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # Every core this process may run on, unless told: LiteRT's own default is one thread.
        num_threads = num_threads or usable_cores()

        # Tensors inside a delegated partition are never written out: to read the logits,
        # run without XNNPACK (TFLite's own kernels, the same integer arithmetic).
        resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if before_softmax else OpResolverType.AUTO
        self._interpreter = Interpreter(model_content=data, num_threads=num_threads,
                                        experimental_op_resolver_type=resolver,
                                        experimental_preserve_all_tensors=before_softmax)
        self._runner = self._interpreter.get_signature_runner("serving_default")
        (self.input_name, self.input), = self._runner.get_input_details().items()
        (self.output_name, self.output), = self._runner.get_output_details().items()
        self._logits: Any = None
        # The final op but a (DE)QUANTIZE of the output, which int8 files end with.
        ops = [op for op in self._interpreter._get_ops_details() if op["op_name"] not in ("DEQUANTIZE", "QUANTIZE")]
        last = ops[-1]
        self.ends_in_softmax = last["op_name"] == "SOFTMAX"  # its output holds probabilities
        if before_softmax and self.ends_in_softmax:
            index = int(last["inputs"][0])
            self._logits = next(t for t in self._interpreter.get_tensor_details() if t["index"] == index)

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
        tensor = self.output
        if self._logits is not None:
            tensor = self._logits
            y = self._interpreter.get_tensor(tensor["index"])
        scale, zero = tensor["quantization"]
        if tensor["dtype"] != np.float32 and scale:
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
    """The .tflite model's error against the Keras model it was exported from.

    `inputs` are as the Keras model takes them. Where the file takes 0-255 pixels and the
    model normalized input, both see the same whole pixels; where the file adds a softmax
    to the model's logits, the comparison is of probabilities.
    """
    from keras_repvgg.core.description import from_export_metadata
    from keras_repvgg.core.transform import PIXEL_MAX, denormalize, normalize, softmax
    from keras_repvgg.models.model import describe

    from .files import read_metadata

    ours, meta = describe(model), read_metadata(data)
    exported = from_export_metadata(meta) if meta is not None else ours
    x_file = x_model = np.asarray(inputs, np.float32)
    if exported.takes_pixels and not ours.takes_pixels:
        p = ours.preprocessing
        x_file = np.clip(np.round(denormalize(x_model, p)), 0, PIXEL_MAX).astype(np.float32)
        x_model = normalize(x_file, p)
    reference = np.asarray(model.predict(x_model, verbose=0, batch_size=8))
    if exported.head == "probabilities" and ours.head == "logits":
        reference = softmax(reference)
    return compare_logits(TFLiteRunner(data)(x_file), reference)
