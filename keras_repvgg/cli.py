"""The `keras-repvgg` command line: a thin shell over the Python API."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence


def _cmd_list(args: argparse.Namespace) -> int:
    from .configs import VARIANTS
    from .parameters import deploy_parameter_count

    print(f"{'variant':<14}{'timm tag':<24}{'deploy params':>15}{'input':>7}")
    for variant in VARIANTS.values():
        tag = variant.timm_tag or "-"
        params = deploy_parameter_count(variant)
        size = variant.preprocessing.input_size
        print(f"{variant.name:<14}{tag:<24}{params:>15,}{size:>7}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from keras_repvgg.converters import convert_checkpoint

    from .io import save_model

    result = convert_checkpoint(
        args.source,
        args.arch,
        form=args.form,
        input_size=args.input_size,
        include_preprocessing=args.include_preprocessing,
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
    save_model(model, args.output)
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("-o", "--output", required=True, help="output .keras file")
    p.set_defaults(func=_cmd_convert)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    # TensorFlow's C++ start-up chatter is not for a command line's users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError
        if args.debug:
            raise
        print(f"keras-repvgg: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
