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
from keras_repvgg.front.records import FORMATS

PARTIAL = 3  # predict: the run finished, but some images could not be read


def _cmd_list(args: argparse.Namespace) -> int:
    from keras_repvgg.core.configs import VARIANTS
    from keras_repvgg.core.parameters import deploy_parameter_count

    print(f"{'variant':<14}{'timm tag':<24}{'deploy params':>15}{'input':>7}")
    for variant in VARIANTS.values():
        tag = variant.timm_tag or "-"
        params = deploy_parameter_count(variant)
        size = variant.preprocessing.input_size
        print(f"{variant.name:<14}{tag:<24}{params:>15,}{size:>7}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from keras_repvgg.converters import convert_checkpoint
    from keras_repvgg.models.io import save_model

    if not args.output and not args.preset:
        raise KerasRepVGGError("convert needs -o OUT.keras, --preset DIR or both")
    if args.preset:
        from keras_repvgg.exports.preset import check_target

        check_target(args.preset)  # before the conversion, which may take a while
    result = convert_checkpoint(
        args.source,
        args.arch,
        form=args.form,
        input_size=args.input_size,
        include_preprocessing=args.include_preprocessing,
        allow_nonfinite=args.allow_nonfinite,
    )
    model = result.model
    form = (
        "fused" if result.fused_blocks == result.total_blocks
        else "training form" if result.fused_blocks == 0
        else f"mixed ({result.fused_blocks}/{result.total_blocks} blocks fused)"
    )
    print(f"loaded {result.checkpoint.weights_path}")
    print(
        f"variant {result.variant.name} ({args.form} form), {form} checkpoint, "
        f"{model.output_shape[-1]} classes, input {tuple(model.input_shape[1:])}, "
        f"{'0-255 RGB' if args.include_preprocessing else 'normalized'} input"
    )
    print(f"parameters {model.count_params():,}")
    if args.output:
        save_model(model, args.output)
        print(f"wrote {args.output}")
    if args.preset:
        from keras_repvgg.exports.preset import write_preset
        from keras_repvgg.front.preset import measure_fidelity

        fidelity, why = measure_fidelity(model, result.checkpoint.weights_path)
        print(f"timm's logits: largest difference {fidelity.max_abs:.2e} ({fidelity.relative:.2e} of the largest logit)"
              if fidelity else f"timm's logits: {why}")
        write_preset(model, args.preset, fidelity, why)
        print(f"wrote KerasHub preset {args.preset}")
    return 0


def _load_model(args: argparse.Namespace):
    """MODEL: a .keras file, or any SOURCE that convert takes. What it is travels in it."""
    from keras_repvgg.front.phone import load_for_export

    model, notes = load_for_export(args.model, getattr(args, "quantization", "float32"), args.arch,
                                   input_size=args.input_size, include_preprocessing=args.include_preprocessing)
    for note in notes:
        print(f"note: {note}")
    return model


def _cmd_export_tflite(args: argparse.Namespace) -> int:
    from keras_repvgg.core.description import from_export_metadata
    from keras_repvgg.front.phone import ExportOptions, export_for_phone
    from keras_repvgg.tflite import (
        TFLiteRunner,
        check_gpu,
        gpu_static_problems,
        model_ops,
        read_metadata,
    )

    options = ExportOptions(
        args.quantization, args.io_dtype, args.batch_size, equalize=False if args.no_equalize else None,
        output="logits" if args.logits else "probabilities", input="normalized" if args.normalized_input else "pixels",
        int8_graph=args.int8_graph,
    )
    done = export_for_phone(args.model, args.output, options, args.calibration, args.arch,
                            input_size=args.input_size, include_preprocessing=args.include_preprocessing)
    for note in done.notes:
        print(f"note: {note}")
    data, report = done.data, done.report
    meta = read_metadata(data)
    assert meta is not None  # every export carries its description
    exported = from_export_metadata(meta)
    runner = TFLiteRunner(data)
    classes = f", {exported.classes} classes" if exported.include_top else ""
    print(f"wrote {args.output} ({len(data) / 2**20:.1f} MiB, {args.quantization}{classes})")
    print(f"in: {runner.input_name} {runner.input['dtype'].__name__} {[int(d) for d in runner.input['shape']]} "
          f"({'0-255 RGB pixels' if exported.takes_pixels else 'normalized RGB'}); "
          f"out: {runner.output_name} {runner.output['dtype'].__name__} {[int(d) for d in runner.output['shape']]}")
    print(f"ops: {', '.join(f'{op.name} x{op.count}' for op in model_ops(data))}")
    if "int8" in meta:
        _print_int8_choice(meta["int8"])
    print(
        f"vs Keras on {report['samples']} held-out inputs: max abs {report['max_abs']:.3g}, "
        f"relative L2 {report['rel_l2']:.3g}, top-1 agreement {report['top1_agreement']:.1%}"
    )
    if args.gpu:
        problems = gpu_static_problems(data)
        for problem in problems:
            print(f"warning: not GPU-delegate compatible: {problem}")
        result = check_gpu(args.output)
        print(_gpu_line(result))
    return 0


def _print_int8_choice(choice: dict) -> None:
    if choice["chosen_by"] != "held-out error":
        print(f"int8 graph: {choice['graph']} ({choice['chosen_by']})")
        return
    print(f"int8 graph: {choice['graph']}, the fastest within {choice['tolerance']} of the best relative L2 "
          f"of the logits on {choice['held_out_samples']} held-out inputs, among the graphs whose top-1 agrees "
          "with the float model's on all but at most one input more than the best's:")
    for row in choice["candidates"]:
        mark = "*" if row["graph"] == choice["graph"] else " "
        ops = ("fewest ops" if row["speed_rank"] == 0 else f"identity apart in {len(row['identity_blocks'])} blocks"
               if "identity_blocks" in row else "identity apart in every block")
        print(f" {mark} {row['graph']:<25} relative L2 {row['rel_l2']:.4f}, top-1 agreement "
              f"{row['top1_agreement']:.1%}, {ops}{'' if row['within_tolerance'] else ', outside the tolerance'}")


def _cmd_export_savedmodel(args: argparse.Namespace) -> int:
    from keras_repvgg.exports.serving import IMAGE_SIGNATURE, export_saved_model, signature_outputs
    from keras_repvgg.models.model import describe

    model = _load_model(args)
    target = export_saved_model(model, args.output, version=args.version, top_k=args.top_k)
    size = model.input_shape[1]
    print(f"wrote {target}")
    for name, outputs in signature_outputs(describe(model)).items():
        images = "encoded JPEG/PNG bytes" if name == IMAGE_SIGNATURE else \
            f"{'uint8' if name == 'serving_uint8' else 'float32'} 0-255 RGB, N x {size} x {size} x 3"
        print(f"signature {name} (images: {images}) -> {', '.join(outputs)}")
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from keras_repvgg.core.heads import output_name
    from keras_repvgg.exports.onnx import INPUT_NAME, export_onnx, write_onnx
    from keras_repvgg.models.model import describe

    model = _load_model(args)
    data = export_onnx(model, opset=args.opset)
    write_onnx(data, args.output)
    size, description = model.input_shape[1], describe(model)
    print(f"wrote {args.output} ({len(data) / 2**20:.1f} MiB)")
    print(f"in: {INPUT_NAME} float32 [batch, {size}, {size}, 3] "
          f"({'0-255 RGB pixels' if description.takes_pixels else 'normalized RGB'}); "
          f"out: {output_name(description.head)} float32")
    return 0


def _cmd_export_openvino(args: argparse.Namespace) -> int:
    from keras_repvgg.core.heads import output_name
    from keras_repvgg.exports.openvino import INPUT_NAME, MODEL_FILE, export_openvino, new_folder
    from keras_repvgg.models.model import describe

    new_folder(args.output)  # before the conversion, which may take a while
    model = _load_model(args)
    folder = export_openvino(model, args.output)
    size, description = model.input_shape[1], describe(model)
    print(f"wrote {folder / MODEL_FILE} and its weights ({sum(p.stat().st_size for p in folder.iterdir()) / 2**20:.1f} MiB)")
    print(f"in: {INPUT_NAME} float32 [batch, {size}, {size}, 3] "
          f"({'0-255 RGB pixels' if description.takes_pixels else 'normalized RGB'}); "
          f"out: {output_name(description.head)} float32")
    return 0


def _progress(records, terminal):
    """Pass the records through, with a bar (count, images/s) on the terminal."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.completed} images"),
               TextColumn("{task.fields[rate]} images/s"), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=terminal), transient=True) as bar:
        task = bar.add_task("predict", total=None, rate="-")
        for record in records:
            yield record
            bar.advance(task)
            speed = bar.tasks[0].speed
            bar.update(task, rate=f"{speed:.1f}" if speed else "-")


def _cmd_predict(args: argparse.Namespace) -> int:
    from keras_repvgg.front.predict import classify_files, load_predictor
    from keras_repvgg.front.records import format_for, write_records

    if args.top < 1:
        raise KerasRepVGGError(f"--top must be at least 1, got {args.top}")
    fmt = format_for(args.output, "jsonl" if args.json else args.format)
    predictor = load_predictor(args.model, args.arch, args.input_size)
    args.notices.extend(f"note: {assumption}" for assumption in predictor.assumptions)
    records = classify_files(predictor, args.images, top=args.top, batch_size=args.batch_size, threads=args.threads)
    if args.terminal is not None:
        records = _progress(records, args.terminal)
    if args.output:
        from keras_repvgg.core.atomic import atomic_path

        with atomic_path(args.output) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
            count, failed = write_records(records, out, fmt, args.top)  # renamed into place when whole
    else:
        count, failed = write_records(records, sys.stdout, fmt, args.top)
    if failed:
        args.notices.append(f"{failed} of {count} images could not be read (their records hold the error)")
        return PARTIAL
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from keras_repvgg.core.augment import Augmentation
    from keras_repvgg.front.train import TrainOptions, train

    defaults = TrainOptions()
    options = TrainOptions(
        epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        learning_rate=args.learning_rate or defaults.learning_rate,
        fine_tune_learning_rate=args.learning_rate or defaults.fine_tune_learning_rate,
        head_learning_rate=args.head_learning_rate or defaults.head_learning_rate,
        batch_size=args.batch_size, validation_split=args.validation_split, seed=args.seed,
        input_size=args.input_size,
        augmentation=Augmentation(scale=(args.min_crop, 1.0), flip=0.0 if args.no_flip else 0.5),
    )
    result = train(args.data, args.output, weights=args.weights, arch=args.arch, validation=args.validation,
                   options=options, save_train_form=args.save_train_form)
    for path, error in result.skipped.items():
        args.notices.append(f"skipped {path}: {error}")
    if result.resumed:
        print("resumed from the backup of an interrupted run")
    print(f"trained on {result.train_images} images of {len(result.classes)} classes "
          f"({', '.join(result.classes[:8])}{', ...' if len(result.classes) > 8 else ''}); "
          f"validation top-1 of the fused model {result.validation_accuracy:.2%} on {result.validation_images} images")
    print(f"wrote {args.output} (fused)" + (f" and {args.save_train_form} (training form)" if args.save_train_form else ""))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from keras_repvgg.front.evaluate import evaluate, table, write_confusion_png, write_report

    *models, data = args.inputs
    if not models:
        raise KerasRepVGGError("evaluate takes MODEL... DATA: at least one model, then the folder")
    result = evaluate(models, data, arch=args.arch, input_size=args.input_size, batch_size=args.batch_size)
    print(table(result))
    if args.report:
        write_report(result, args.report)
        print(f"wrote {args.report}")
    if args.confusion:
        write_confusion_png(result, args.confusion)
        print(f"wrote {args.confusion}")
    for path, error in result.unreadable.items():
        args.notices.append(f"skipped {path}: {error}")
    return 0


def _gpu_line(report) -> str:
    if not report["compiled"]:
        return f"GPU: did not compile ({report.get('error')})"
    state = "fully accelerated" if report["fully_accelerated"] else "NOT fully accelerated"
    line = f"GPU: {state}; max difference from the CPU interpreter {report['max_abs_diff']:.3g} " \
        f"({report['max_rel_diff']:.2g} of the output scale)"
    if report["static_problems"]:
        line += "; ops the GPU delegate's table refuses: " + "; ".join(report["static_problems"])
    return line


def _cmd_check_gpu(args: argparse.Namespace) -> int:
    from keras_repvgg.tflite import check_gpu

    report = check_gpu(args.file)
    print(_gpu_line(report))
    ok = report["compiled"] and report["fully_accelerated"] and not report["static_problems"]
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    from keras_repvgg.front.phone import ExportOptions  # numpy only: the choices, without TensorFlow

    parser = argparse.ArgumentParser(
        prog="keras-repvgg", description="RepVGG image classifiers for TensorFlow/Keras."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the variants")
    p.set_defaults(func=_cmd_list)

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
    p.set_defaults(func=_cmd_convert)

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
    p.add_argument("--normalized-input", action="store_true",
                   help="take normalized input, as the model does (default: 0-255 RGB, normalized inside)")
    p.add_argument("--logits", action="store_true",
                   help="a classifier's logits out (default: probabilities, a softmax in the graph)")
    p.add_argument("--gpu", action="store_true", help="check the file on LiteRT's GPU accelerator")
    p.set_defaults(func=_cmd_export_tflite)

    p = export.add_parser("savedmodel", help="export a SavedModel version folder for TF Serving")
    p.add_argument("model", help="a .keras file, or any SOURCE that convert takes")
    p.add_argument("-o", "--output", required=True, help="the model's base folder; the version goes inside")
    p.add_argument("--version", type=int, default=1, help="version folder name (default 1; never overwritten)")
    p.add_argument("--top-k", type=int, default=5, help="classes returned by the image signature")
    p.add_argument("--arch", help="variant name, for a SOURCE")
    p.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    p.set_defaults(func=_cmd_export_savedmodel, include_preprocessing=False)

    p = export.add_parser("onnx", help="export an .onnx model (normalized NHWC input, the model's output)")
    p.add_argument("model", help="a .keras file, or any SOURCE that convert takes")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the converter's)")
    p.add_argument("--arch", help="variant name, for a SOURCE")
    p.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    p.set_defaults(func=_cmd_export_onnx, include_preprocessing=False)

    p = export.add_parser("openvino", help="export an OpenVINO IR folder (normalized NHWC input, the model's output)")
    p.add_argument("model", help="a .keras file, a KerasHub preset folder, or any SOURCE that convert takes")
    p.add_argument("-o", "--output", required=True, help="output folder (model.xml, model.bin, keras_repvgg.json)")
    p.add_argument("--arch", help="variant name, for a SOURCE")
    p.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    p.set_defaults(func=_cmd_export_openvino, include_preprocessing=False)

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
    p.set_defaults(func=_cmd_predict)

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
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="top-1, top-5 and recall of models on a labelled folder")
    p.add_argument("inputs", nargs="+", metavar="MODEL... DATA",
                   help="models (.keras, .tflite, SavedModel folders, SOURCEs), then a folder with one subfolder per class")
    p.add_argument("--report", metavar="JSON", help="write every number, and each confusion matrix, as JSON")
    p.add_argument("--confusion", metavar="PNG", help="draw each model's confusion matrix into a PNG")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--arch", help="variant name, for a SOURCE")
    p.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("check-gpu", help="compile a .tflite on LiteRT's GPU accelerator")
    p.add_argument("file", help="a .tflite file")
    p.set_defaults(func=_cmd_check_gpu)
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
