"""What predict is given, expanded to image paths: files, folders, glob patterns, @lists."""

from __future__ import annotations

import os

from keras_repvgg.front.inputs import Unmatched, image_paths


def test_files_folders_patterns_and_lists_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ["b/z.jpg", "b/a.PNG", "b/notes.txt", "b/deep/c.webp", "a.jpg", "empty/readme.md"]:
        os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
        open(name, "wb").close()
    with open("list.txt", "w") as f:
        f.write("a.jpg\n\n  b/notes.txt  \nmissing.jpg\n")
    open("blank.txt", "w").close()
    got = list(image_paths(["a.jpg", "b", "b/**/*.jpg", "b/**", "@list.txt", "missing.jpg",
                            "none/*.jpg", "empty", "@blank.txt", "@nolist.txt"]))
    paths = [item for item in got if isinstance(item, str)]
    # A folder: its image files only, recursively, in a sorted walk; a pattern: every file it matches.
    assert paths == ["a.jpg", "b/a.PNG", "b/z.jpg", "b/deep/c.webp", "b/z.jpg",
                     "b/a.PNG", "b/deep/c.webp", "b/notes.txt", "b/z.jpg",
                     "a.jpg", "b/notes.txt", "missing.jpg", "missing.jpg"]
    unmatched = [item for item in got if isinstance(item, Unmatched)]
    assert [u.name for u in unmatched] == ["none/*.jpg", "empty", "@blank.txt", "@nolist.txt"]
    assert "no file matches" in unmatched[0].error and "no image files" in unmatched[1].error
    assert "names no file" in unmatched[2].error and "cannot read the list" in unmatched[3].error
    assert all(u.error.startswith(u.name + ": ") for u in unmatched)  # each names its input
