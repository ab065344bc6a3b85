"""The `keras-repvgg` command line: a thin shell over the Python API."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
from typing import Iterator, Optional, Sequence

from keras_repvgg.core.errors import KerasRepVGGError
from keras_repvgg.front import commands
from keras_repvgg.front.commands import PARTIAL
from keras_repvgg.front.records import FORMATS

__all__ = ["PARTIAL", "build_parser", "main"]  # PARTIAL: predict's exit status when some images failed


def build_parser() -> argparse.ArgumentParser:
    from keras_repvgg.front.phone import ExportOptions  # numpy only: the choices, without TensorFlow

    parser = argparse.ArgumentParser(
        prog="keras-repvgg", description="RepVGG image classifiers for TensorFlow/Keras."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the variants")
    p.set_defaults(func=commands.cmd_list)

    p = sub.add_parser("convert", help="convert a timm checkpoint into a .keras model")
    p.add_argument(
        "source",
        help="a .safetensors file, a folder with config.json, a hub id, or an official .pth file",
    )
    p.add_argument("--arch", help="variant name (inferred from config.json or shapes if omitted)")
    p.add_argument("--input-size", type=int, help="input height and width")
    p.add_argument(
        "--form",
        choices=("deploy", "train"),
        default="deploy",
        help="deploy: fused 3x3 convs (default); train: the multi-branch form, for fine-tuning",
    )
    p.add_argument(
        "--include-preprocessing",
        action="store_true",
        help="take 0-255 RGB and normalize inside the model",
    )
    p.add_argument("--allow-nonfinite", action="store_true", help="convert weights holding NaN or inf")
    p.add_argument("-o", "--output", help="output .keras file")
    p.add_argument("--preset", metavar="DIR",
                   help="also (or instead) write a KerasHub preset folder with a model card (needs keras-hub)")
    p.set_defaults(func=commands.cmd_convert)

    export = sub.add_parser("export", help="export a model").add_subparsers(dest="format", required=True)
    p = export.add_parser("tflite", help="export a .tflite model for mobile GPU delegates")
    p.add_argument("model", help="a .keras file, or any SOURCE that convert takes")
    p.add_argument("-o", "--output", required=True, help="output .tflite file")
    choices = ExportOptions.choices()
    p.add_argument("--quantization", choices=choices["quantization"], default="float32")
    p.add_argument("--calibration", help="folder of images for int8 calibration (some are held out)")
    p.add_argument("--io-dtype", choices=choices["io_dtype"], default="float32")
    p.add_argument("--include-preprocessing", action="store_true", help="0-255 RGB input (SOURCE only)")
    p.add_argument("--arch", help="variant name, for a SOURCE")
    p.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument(
        "--no-equalize", action="store_true", help="int8: only graphs without cross-layer equalization"
    )
    p.add_argument("--int8-graph", choices=choices["int8_graph"], default="auto",
                   help="int8: the graph to make; auto scores every candidate on the held-out images "
                        "and keeps the fastest within the tolerance of the best")
    p.add_argument("--int8-workers", type=int, metavar="N",
                   help="int8 auto: candidates converted at once, each in a process of its own "
                        "(default: one per core, once the first conversion shows that a worker pays)")
    p.add_argument("--normalized-input", action="store_true",
                   help="take normalized input, as the model does (default: 0-255 RGB, normalized inside)")
    p.add_argument("--logits", action="store_true",
                   help="a classifier's logits out (default: probabilities, a softmax in the graph)")
    p.add_argument("--gpu", action="store_true", help="check the file on LiteRT's GPU accelerator")
    p.set_defaults(func=commands.cmd_export_tflite)

    p = export.add_parser("savedmodel", help="export a SavedModel version folder for TF Serving")
    p.add_argument("model", help="a .keras file, or any SOURCE that convert takes")
    p.add_argument("-o", "--output", required=True, help="the model's base folder; the version goes inside")
    p.add_argument("--version", type=int, default=1, help="version folder name (default 1; never overwritten)")
    p.add_argument("--top-k", type=int, default=5, help="classes returned by the image signature")
    p.add_argument("--arch", help="variant name, for a SOURCE")
    p.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    p.set_defaults(func=commands.cmd_export_savedmodel, include_preprocessing=False)

    p = export.add_parser("onnx", help="export an .onnx model (normalized NHWC input, the model's output)")
    p.add_argument("model", help="a .keras file, or any SOURCE that convert takes")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the converter's)")
    p.add_argument("--arch", help="variant name, for a SOURCE")
    p.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    p.set_defaults(func=commands.cmd_export_onnx, include_preprocessing=False)

    p = export.add_parser("openvino", help="export an OpenVINO IR folder (normalized NHWC input, the model's output)")
    p.add_argument("model", help="a .keras file, a KerasHub preset folder, or any SOURCE that convert takes")
    p.add_argument("-o", "--output", required=True, help="output folder (model.xml, model.bin, keras_repvgg.json)")
    p.add_argument("--arch", help="variant name, for a SOURCE")
    p.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    p.set_defaults(func=commands.cmd_export_openvino, include_preprocessing=False)

    p = sub.add_parser("predict", help="classify images with a .keras, .tflite, SavedModel or SOURCE")
    p.add_argument("model", help="a .keras file, a .tflite file, a SavedModel folder, or any SOURCE")
    p.add_argument("images", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively for image files), glob patterns (quoted), "
                        "or @LIST: a text file naming one image a line")
    p.add_argument("--top", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("-o", "--output", help="write to this file, whole at the end (default: stdout, as it goes)")
    p.add_argument("--format", choices=FORMATS,
                   help="text, jsonl (JSON Lines, an object per image) or csv; default: text on stdout, "
                        "jsonl into --output (csv for a .csv name)")
    p.add_argument("--json", action="store_true", help="the same as --format jsonl")
    p.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    p.add_argument("--threads", type=int, help="image-decoding threads (default: one per CPU)")
    p.add_argument("--arch", help="variant name, for a SOURCE")
    p.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    p.set_defaults(func=commands.cmd_predict)

    p = sub.add_parser("train", help="train on a folder of labelled images (one subfolder per class)")
    p.add_argument("data", help="a folder with one subfolder of images per class; the names are the labels")
    p.add_argument("-o", "--output", required=True, help="the fused model, a .keras file")
    p.add_argument("--weights", help="starting checkpoint: any SOURCE convert takes, in the training form")
    p.add_argument("--arch", help="variant name (with --weights: checked against it; without: a random start)")
    p.add_argument("--validation", help="a folder with the same class subfolders (default: a split of DATA)")
    p.add_argument("--validation-split", type=float, default=0.2, help="of each class, without --validation (0.2)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of the whole network (default 10)")
    p.add_argument("--warmup-epochs", type=int, default=0,
                   help="epochs of the new head alone over the frozen backbone first, with --weights (default 0)")
    p.add_argument("--learning-rate", type=float,
                   help="the whole network's peak learning rate (default 5e-4 from --weights, 1e-3 from a random start)")
    p.add_argument("--head-learning-rate", type=float, help="the warm-up's peak learning rate (default 1e-2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-size", type=int, help="input height and width (default: the checkpoint's)")
    p.add_argument("--min-crop", type=float, default=0.08,
                   help="augmentation: the smallest random crop, as a fraction of the image's area (default 0.08)")
    p.add_argument("--no-flip", action="store_true", help="augmentation: no horizontal flips (text, digits, arrows)")
    p.add_argument("--seed", type=int, default=0, help="the split, the shuffling and the new head (default 0)")
    p.add_argument("--save-train-form", metavar="FILE", help="also write the trained training form (.keras), "
                   "which int8's best graphs start from")
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser("evaluate", help="top-1, top-5 and recall of models on a labelled folder")
    p.add_argument("inputs", nargs="+", metavar="MODEL... DATA",
                   help="models (.keras, .tflite, SavedModel folders, SOURCEs), then a folder with one subfolder per class")
    p.add_argument("--report", metavar="JSON", help="write every number, and each confusion matrix, as JSON")
    p.add_argument("--confusion", metavar="PNG", help="draw each model's confusion matrix into a PNG")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--arch", help="variant name, for a SOURCE")
    p.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    p.set_defaults(func=commands.cmd_evaluate)

    p = sub.add_parser("check-gpu", help="compile a .tflite on LiteRT's GPU accelerator")
    p.add_argument("file", help="a .tflite file")
    p.set_defaults(func=commands.cmd_check_gpu)
    return parser


@contextlib.contextmanager
def _native_stderr_captured(enabled: bool) -> Iterator[None]:
    """Route file descriptor 2 to a temporary file while the command runs.

    TensorFlow 2.21 writes start-up notes (oneDNN, CUDA probes) from C++ straight to
    stderr, whatever TF_CPP_MIN_LOG_LEVEL says. They are kept, and shown if the
    command dies of something unexpected; a normal run or a clear error prints none.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        except (KerasRepVGGError, OSError, SystemExit):
            failed = False  # reported in one line by main, or an orderly exit
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace"))


def _terminal():
    """stderr as a stream of its own when it is a terminal (for progress bars), else None.

    A duplicate of the descriptor: fd 2 itself is captured while a command runs."""
    try:
        return os.fdopen(os.dup(2), "w", buffering=1) if os.isatty(2) else None
    except OSError:
        return None


def _terminate(signum, frame):
    # SIGTERM unwinds like an exception, so that half-written temporary outputs are removed.
    raise SystemExit(128 + signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) is not for a command
    # line's users; real failures still surface as Python exceptions. --debug keeps it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if args.debug else "3")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    args.notices = []  # one-line notes for stderr, printed once TensorFlow's chatter is no longer captured
    args.terminal = _terminal()
    try:
        with _native_stderr_captured(not args.debug):
            status = args.func(args)
        for notice in args.notices:
            print(f"keras-repvgg: {notice}", file=sys.stderr)
        return status
    except BrokenPipeError:
        # The reader went away (`keras-repvgg list | head -5`): nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (KerasRepVGGError, OSError) as err:  # bad input, or a file the system refused
        if args.debug:
            raise
        message = " ".join(str(err).split())  # one line, whatever the exception wrote
        print(f"keras-repvgg: error: {message}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug, ours or a library's: not the user's input
        if args.debug:
            raise
        message = " ".join(str(err).split())[:300]
        print(f"keras-repvgg: internal error: {type(err).__name__}: {message} "
              "(a bug; run again with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        if args.terminal is not None:
            args.terminal.close()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
