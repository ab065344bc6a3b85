"""TFLite export for mobile GPU delegates, checked on LiteRT (installed as keras_repvgg.tflite).

Importing this package does not import TensorFlow; `export_tflite` does, when called.
"""

from keras_repvgg.core.errors import ExportError

from .export import IO_DTYPES, QUANTIZATIONS, export_tflite
from .files import attach_files, attach_labels, read_labels, read_metadata, write_tflite
from .gpu import check_gpu, run_on_gpu
from .int8_search import MIN_CALIBRATION_SAMPLES
from .ops import GPU_MAX_VERSION, gpu_static_problems, model_ops
from .runtime import TFLiteRunner, compare_logits, evaluate_tflite

__all__ = [
    "ExportError", "GPU_MAX_VERSION", "IO_DTYPES", "MIN_CALIBRATION_SAMPLES", "QUANTIZATIONS",
    "TFLiteRunner", "attach_files", "attach_labels", "check_gpu", "compare_logits", "evaluate_tflite", "run_on_gpu",
    "export_tflite", "gpu_static_problems", "model_ops", "read_labels", "read_metadata", "write_tflite",
]
