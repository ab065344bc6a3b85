"""Apache Beam: classify a bucket of images with RunInference, on any runner.

    python -m keras_repvgg.front.beam --model MODEL --input GLOB --output PREFIX [--top K]
        [--batch-size N] [Beam's pipeline options: --runner DataflowRunner --project ... ]

writes predict's JSON Lines records, `PREFIX-SSSSS-of-NNNNN.jsonl`, and the images that
could not be read, with their error, to the dead-letter output `PREFIX-errors-...jsonl`.
`RepVGGModelHandler` is the RunInference model handler behind it, for pipelines of one's own.
Needs the extra `keras-repvgg[beam]`; nothing else in the package imports this module.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
from typing import Any, Iterable, Optional, Sequence, Union

try:
    import apache_beam as beam
    from apache_beam.io import fileio
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
    from apache_beam.options.pipeline_options import PipelineOptions
except ImportError as err:  # an optional extra: say how to get it
    raise ImportError(f"keras_repvgg.front.beam needs Apache Beam: pip install 'keras-repvgg[beam]' ({err})") from None

from keras_repvgg.core.artifacts import ArtifactKind, kind_by_name
from keras_repvgg.front.predict import Predictor, decode, load_predictor, records

ImageInput = Union[str, bytes]  # a path any Beam file system reads (local, gs://, s3://), or encoded bytes
DEAD_LETTERS = "-errors"


def _local_model(model: str) -> str:
    """A .keras or .tflite file on a remote file system is copied here first (our loaders read
    local files); a SavedModel folder is read by TensorFlow wherever it is."""
    if "://" not in model or kind_by_name(model) not in (ArtifactKind.KERAS, ArtifactKind.TFLITE):
        return model
    folder = tempfile.mkdtemp(prefix="keras_repvgg_beam_")
    local = os.path.join(folder, os.path.basename(model))
    with FileSystems.open(model, compression_type=CompressionTypes.UNCOMPRESSED) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return local


class RepVGGModelHandler(ModelHandler[ImageInput, PredictionResult, Predictor]):
    """RunInference over images with any model `predict` takes (.keras, .tflite, SavedModel,
    checkpoint SOURCE), through the model's own eval transform, exactly as `predict` does.

    Each input is a path or the encoded bytes of an image; each PredictionResult's
    `inference` is predict's record: {"image": PATH, "top": [...]}, or {"image": PATH,
    "error": MESSAGE} for an image that cannot be read (bytes are named "<bytes>": key them
    with Beam's KeyedModelHandler to keep their names). One bad image never fails a batch.
    """

    def __init__(self, model: str, *, top: int = 5, arch: Optional[str] = None, input_size: Optional[int] = None,
                 min_batch_size: int = 1, max_batch_size: int = 32, **kwargs: Any):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size, **kwargs)
        self._model, self._top, self._arch, self._input_size = model, top, arch, input_size

    def load_model(self) -> Predictor:
        return load_predictor(_local_model(self._model), self._arch, self._input_size)

    def run_inference(self, batch: Sequence[ImageInput], model: Predictor,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        names = ["<bytes>" if isinstance(example, bytes) else example for example in batch]
        decoded = [decode(io.BytesIO(_read(example)), model, name) for example, name in zip(batch, names, strict=True)]
        return [PredictionResult(example, record)
                for example, record in zip(batch, records(model, names, decoded, self._top), strict=True)]

    def get_metrics_namespace(self) -> str:
        return "keras_repvgg"


def _read(example: ImageInput) -> bytes:
    if isinstance(example, bytes):
        return example
    try:  # as stored: no decompression guessed from the name
        with FileSystems.open(example, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return f.read()
    except (OSError, beam.io.filesystem.BeamIOError):
        return b""  # decoding then reports it as no image (the file vanished after matching)


class _Unreadable(beam.PartitionFn):
    """Partition 1 for the records of images that could not be read, 0 for the rest."""

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        return int("error" in element)


def classify(images: beam.PCollection, handler: RepVGGModelHandler) -> dict[str, beam.PCollection]:
    """Paths or bytes -> {"records": predict's records, "errors": the unreadable images' records}."""
    split = (images
             | "Classify" >> RunInference(handler)
             | "Records" >> beam.Map(lambda result: result.inference)
             | "Split" >> beam.Partition(_Unreadable(), 2))
    return {"records": split[0], "errors": split[1]}


def build(pipeline: beam.Pipeline, model: str, patterns: Sequence[str], output: str, *, top: int = 5,
          batch_size: int = 32, arch: Optional[str] = None, input_size: Optional[int] = None) -> None:
    """Files matching `patterns` -> PREFIX-*.jsonl (records) and PREFIX-errors-*.jsonl (dead letters)."""
    paths = (pipeline
             | "Patterns" >> beam.Create(list(patterns))
             | "Match" >> fileio.MatchAll()
             | "Paths" >> beam.Map(lambda metadata: metadata.path)
             | "Spread" >> beam.Reshuffle())  # a glob is matched in one place; classify everywhere
    handler = RepVGGModelHandler(model, top=top, arch=arch, input_size=input_size, max_batch_size=batch_size)
    outputs = classify(paths, handler)
    for name, prefix in (("records", output), ("errors", output + DEAD_LETTERS)):
        (outputs[name]
         | f"{name} as JSON" >> beam.Map(json.dumps)
         | f"Write {name}" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl"))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m keras_repvgg.front.beam",
        description="Classify images with Apache Beam's RunInference; other options are Beam's pipeline options.")
    parser.add_argument("--model", required=True, help="a .keras or .tflite file, a SavedModel folder, or a SOURCE")
    parser.add_argument("--input", required=True, action="append",
                        help="a file pattern (any Beam file system: /data/*.jpg, gs://bucket/**); repeatable")
    parser.add_argument("--output", required=True, help="output prefix: PREFIX-*.jsonl and PREFIX-errors-*.jsonl")
    parser.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="most images per model call (default 32)")
    parser.add_argument("--arch", help="variant name, for a SOURCE")
    parser.add_argument("--input-size", type=int, help="input height and width, for a SOURCE")
    args, beam_args = parser.parse_known_args(argv)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as pipeline:
        build(pipeline, args.model, args.input, args.output, top=args.top, batch_size=args.batch_size,
              arch=args.arch, input_size=args.input_size)


if __name__ == "__main__":
    main()
