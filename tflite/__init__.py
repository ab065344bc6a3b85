"""TFLite export for mobile GPU delegates, checked on LiteRT (installed as keras_repvgg.tflite).

Importing this package does not import TensorFlow; `export_tflite` does, when called.
"""

from .export import (
    IO_DTYPES,
    MIN_CALIBRATION_SAMPLES,
    QUANTIZATIONS,
    ExportError,
    attach_files,
    attach_labels,
    export_tflite,
    read_labels,
    read_metadata,
    write_tflite,
)
from .gpu import check_gpu, run_on_gpu
from .ops import GPU_MAX_VERSION, gpu_static_problems, model_ops
from .runtime import TFLiteRunner, compare_logits, evaluate_tflite

__all__ = [
    "ExportError", "GPU_MAX_VERSION", "IO_DTYPES", "MIN_CALIBRATION_SAMPLES", "QUANTIZATIONS",
    "TFLiteRunner", "attach_files", "attach_labels", "check_gpu", "compare_logits", "evaluate_tflite", "run_on_gpu",
    "export_tflite", "gpu_static_problems", "model_ops", "read_labels", "read_metadata", "write_tflite",
]
