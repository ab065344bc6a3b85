"""What each `keras-repvgg` command does, over the Python API: the parser and the process's
plumbing (stderr, signals, exit codes) live in `cli`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable, Iterator, Optional

from keras_repvgg.core.errors import KerasRepVGGError

PARTIAL = 3  # predict: the run finished, but some images could not be read


def cmd_list(args: argparse.Namespace) -> int:
    from keras_repvgg.core.configs import VARIANTS
    from keras_repvgg.core.parameters import deploy_parameter_count

    print(f"{'variant':<14}{'timm tag':<24}{'deploy params':>15}{'input':>7}")
    for variant in VARIANTS.values():
        tag = variant.timm_tag or "-"
        params = deploy_parameter_count(variant)
        size = variant.preprocessing.input_size
        print(f"{variant.name:<14}{tag:<24}{params:>15,}{size:>7}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from keras_repvgg.converters.sources import resolve_source

    if not args.output and not args.preset:
        raise KerasRepVGGError("convert needs -o OUT.keras, --preset DIR or both")
    resolve_source(args.source)  # a missing checkpoint is said before TensorFlow is imported (seconds)
    if args.preset:
        from keras_repvgg.exports.preset import check_target

        check_target(args.preset)  # before the conversion, which may take a while
    from keras_repvgg.converters import convert_checkpoint
    from keras_repvgg.models.io import save_model

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


def cmd_export_tflite(args: argparse.Namespace) -> int:
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
        int8_graph=args.int8_graph, int8_workers=args.int8_workers,
    )
    with _status(args.terminal) as progress:
        done = export_for_phone(args.model, args.output, options, args.calibration, args.arch, progress=progress,
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


def cmd_export_savedmodel(args: argparse.Namespace) -> int:
    model = _load_model(args)  # first: a missing file is said before TensorFlow loads
    from keras_repvgg.exports.serving import IMAGE_SIGNATURE, export_saved_model, signature_outputs
    from keras_repvgg.models.model import describe

    target = export_saved_model(model, args.output, version=args.version, top_k=args.top_k)
    size = model.input_shape[1]
    print(f"wrote {target}")
    for name, outputs in signature_outputs(describe(model)).items():
        images = "encoded JPEG/PNG bytes" if name == IMAGE_SIGNATURE else \
            f"{'uint8' if name == 'serving_uint8' else 'float32'} 0-255 RGB, N x {size} x {size} x 3"
        print(f"signature {name} (images: {images}) -> {', '.join(outputs)}")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    model = _load_model(args)  # first: a missing file is said before TensorFlow loads
    from keras_repvgg.core.heads import output_name
    from keras_repvgg.exports.onnx import INPUT_NAME, export_onnx, write_onnx
    from keras_repvgg.models.model import describe

    data = export_onnx(model, opset=args.opset)
    write_onnx(data, args.output)
    size, description = model.input_shape[1], describe(model)
    print(f"wrote {args.output} ({len(data) / 2**20:.1f} MiB)")
    print(f"in: {INPUT_NAME} float32 [batch, {size}, {size}, 3] "
          f"({'0-255 RGB pixels' if description.takes_pixels else 'normalized RGB'}); "
          f"out: {output_name(description.head)} float32")
    return 0


def cmd_export_openvino(args: argparse.Namespace) -> int:
    from keras_repvgg.core.heads import output_name
    from keras_repvgg.exports.openvino import INPUT_NAME, MODEL_FILE, export_openvino, new_folder

    new_folder(args.output)  # before the conversion, which may take a while
    model = _load_model(args)  # a missing file is said before TensorFlow loads
    from keras_repvgg.models.model import describe

    folder = export_openvino(model, args.output)
    size, description = model.input_shape[1], describe(model)
    print(f"wrote {folder / MODEL_FILE} and its weights ({sum(p.stat().st_size for p in folder.iterdir()) / 2**20:.1f} MiB)")
    print(f"in: {INPUT_NAME} float32 [batch, {size}, {size}, 3] "
          f"({'0-255 RGB pixels' if description.takes_pixels else 'normalized RGB'}); "
          f"out: {output_name(description.head)} float32")
    return 0


@contextlib.contextmanager
def _status(terminal) -> Iterator[Optional[Callable[[str], None]]]:
    """On the terminal, a spinner line that each call replaces (the int8 search's candidate,
    with the time it has run: B1g4's takes minutes); elsewhere nothing."""
    if terminal is None:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(file=terminal), transient=True) as bar:
        task = bar.add_task("exporting", total=None)
        yield lambda line: bar.update(task, description=line)


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


def cmd_predict(args: argparse.Namespace) -> int:
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


def cmd_train(args: argparse.Namespace) -> int:
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


def cmd_evaluate(args: argparse.Namespace) -> int:
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


def cmd_check_gpu(args: argparse.Namespace) -> int:
    from keras_repvgg.tflite import check_gpu

    report = check_gpu(args.file)
    print(_gpu_line(report))
    ok = report["compiled"] and report["fully_accelerated"] and not report["static_problems"]
    return 0 if ok else 1
