"""Folders of labelled images (`core/folders`) and the training crops (`core/augment`)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from keras_repvgg.core.augment import Augmentation, augmented_pixels, crop_box
from keras_repvgg.core.configs import Preprocessing
from keras_repvgg.core.errors import DatasetError, ImageError, KerasRepVGGError
from keras_repvgg.core.folders import read_folder, split


def _folder(root, counts: dict[str, int]):
    for name, count in counts.items():
        (root / name / "deeper").mkdir(parents=True)
        for i in range(count):
            where = root / name / ("deeper" if i % 2 else "") / f"{i:03d}.png"
            Image.new("RGB", (12, 10), (i, 0, 0)).save(where)
    (root / next(iter(counts)) / "notes.txt").write_text("not an image")
    return root


def test_classes_are_the_subfolders_in_name_order(tmp_path):
    images = read_folder(_folder(tmp_path, {"zebra": 3, "ant": 4, "moth": 2}))
    assert images.classes == ("ant", "moth", "zebra")
    assert images.counts() == [4, 2, 3]
    assert all(p.endswith(".png") for p in images.paths)  # notes.txt is not an image
    assert [images.classes[label] in path for label, path in zip(images.labels, images.paths, strict=True)] == [True] * 9
    assert read_folder(tmp_path).paths == images.paths  # the same order every time


def test_folder_errors_name_the_folder_and_what_was_expected(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        read_folder(tmp_path / "missing")
    _folder(tmp_path / "one", {"only": 2})
    with pytest.raises(DatasetError, match=r"1 class subfolder\(s\); expected at least 2"):
        read_folder(tmp_path / "one")
    _folder(tmp_path / "two", {"a": 2, "b": 2})
    (tmp_path / "two" / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no image files .* for class 'empty'"):
        read_folder(tmp_path / "two")
    _folder(tmp_path / "val", {"a": 1, "c": 1})
    expected = r"expected the class subfolders \['a', 'b'\]; missing \['b'\], not in training \['c'\]"
    with pytest.raises(DatasetError, match=expected):
        read_folder(tmp_path / "val", ("a", "b"))


def test_split_holds_out_each_class_by_the_fraction_with_a_seed(tmp_path):
    images = read_folder(_folder(tmp_path, {"a": 10, "b": 5, "c": 2}))
    train, held = split(images, 0.2, seed=3)
    assert held.counts() == [2, 1, 1] and train.counts() == [8, 4, 1]
    assert not set(train.paths) & set(held.paths) and len(train) + len(held) == len(images)
    assert split(images, 0.2, seed=3) == (train, held)
    assert split(images, 0.2, seed=4)[1].paths != held.paths  # another seed, another draw
    with pytest.raises(DatasetError, match="between 0 and 1"):
        split(images, 1.0, seed=0)


def test_split_refuses_a_class_of_one_image(tmp_path):
    images = read_folder(_folder(tmp_path, {"a": 3, "b": 1}))
    with pytest.raises(DatasetError, match="class 'b' has 1 image"):
        split(images, 0.2, seed=0)


def test_crops_lie_inside_the_image_and_cover_the_asked_area():
    rng = np.random.default_rng(0)
    augmentation = Augmentation(scale=(0.25, 0.5))
    boxes = [crop_box(400, 300, augmentation, rng) for _ in range(2000)]
    for left, top, w, h in boxes:
        assert 0 <= left and left + w <= 400 and 0 <= top and top + h <= 300
    areas = np.array([w * h for _, _, w, h in boxes]) / (400 * 300)
    ratios = np.array([w / h for _, _, w, h in boxes])
    assert areas.min() >= 0.24 and areas.max() <= 0.51  # rounding to whole pixels
    assert ratios.min() >= 0.74 and ratios.max() <= 1.34
    lefts = np.array([b[0] for b in boxes])
    assert lefts.std() > 30  # positions vary


def test_an_image_too_narrow_for_any_draw_gets_the_centre_crop_in_range():
    rng = np.random.default_rng(0)
    left, top, w, h = crop_box(10, 1000, Augmentation(scale=(0.9, 1.0)), rng)
    assert (w, h) == (10, 13) and left == 0 and top == (1000 - 13) // 2


def test_augmented_pixels_are_drawn_from_the_generator(tmp_path):
    path = tmp_path / "gradient.png"
    Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (100, 1))).save(path)
    p = Preprocessing(input_size=32)
    a = augmented_pixels(path, p, Augmentation(), np.random.default_rng(5))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, augmented_pixels(path, p, Augmentation(), np.random.default_rng(5)))
    flipped = augmented_pixels(path, p, Augmentation(scale=(1, 1), ratio=(2, 2), flip=1.0), np.random.default_rng(0))
    plain = augmented_pixels(path, p, Augmentation(scale=(1, 1), ratio=(2, 2), flip=0.0), np.random.default_rng(0))
    assert np.array_equal(flipped, plain[:, ::-1])
    assert plain[0, 0, 0] < plain[0, -1, 0]  # the gradient rises left to right: not flipped
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageError, match="broken.png"):
        augmented_pixels(tmp_path / "broken.png", p, Augmentation(), np.random.default_rng(0))


@pytest.mark.parametrize("bad", [dict(scale=(0.0, 1.0)), dict(scale=(0.5, 0.2)), dict(ratio=(2.0, 1.0)),
                                 dict(flip=1.5)])
def test_bad_augmentation_settings_are_refused(bad):
    with pytest.raises(KerasRepVGGError):
        Augmentation(**bad)
