"""What `predict` is given, as image paths, lazily: files, folders, glob patterns, @lists.

A path is yielded as soon as it is known, so that a million-line list or a deep folder
starts classifying at once and never sits whole in memory (a folder's own listing is
sorted, so that the order is the same on every run).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Union

from keras_repvgg.core.folders import walk_images
from keras_repvgg.core.preprocessing import IMAGE_SUFFIXES

GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class Unmatched:
    """An input that names no image: a pattern matching nothing, an empty folder, a missing list."""

    name: str
    error: str


Item = Union[str, Unmatched]


def _kind(argument: str) -> str:
    if argument.startswith("@"):
        return "list"
    if os.path.isdir(argument):
        return "folder"
    if GLOB_CHARACTERS & set(argument) and not os.path.exists(argument):
        return "pattern"
    return "file"  # readable or not: decoding says what is wrong with it


def _expand(argument: str, kind: str) -> Iterator[str]:
    if kind == "list":
        with open(argument[1:], encoding="utf-8") as lines:
            yield from (line.strip() for line in lines if line.strip())
    elif kind == "folder":
        yield from walk_images(argument)
    else:
        # The files it matches, as Beam's file patterns do (`dir/**` also matches dir itself)
        yield from (match for match in sorted(glob.iglob(argument, recursive=True)) if os.path.isfile(match))


EMPTY = {"list": "the list names no file", "folder": f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder",
         "pattern": "no file matches the pattern"}


def _one(argument: str) -> Iterator[Item]:
    kind = _kind(argument)
    if kind == "file":
        yield argument
        return
    found = False
    try:
        for path in _expand(argument, kind):
            found = True
            yield path
    except OSError as err:  # a list that cannot be read
        yield Unmatched(argument, f"{argument}: cannot read the {kind} ({err.strerror or err})")
        return
    if not found:
        yield Unmatched(argument, f"{argument}: {EMPTY[kind]}")


def image_paths(inputs: Iterable["str | os.PathLike[str]"]) -> Iterator[Item]:
    """Each input in turn: a file as given; a folder's image files (.jpg, .png, ...), recursively;
    the files a glob pattern matches, sorted (`**` spans folders);
    `@LIST`, a text file naming one path a line (relative to the current folder; blank lines
    skipped). An input that yields nothing gives one `Unmatched` saying why."""
    for argument in inputs:
        yield from _one(os.fspath(argument))
