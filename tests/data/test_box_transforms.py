"""Box-carrying transforms of pretraining (OFA's ``utils/transforms.py``): values computed by hand."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from data.augment import seeded_rngs
from data.box_transforms import (
    BoxedImage,
    LargeScaleJitter,
    ObjectCenterCrop,
    RandomHorizontalFlip,
    RandomResize,
    resize_short_side,
)


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (h, w, 3), dtype=np.uint8))


def _white_box_image(w: int, h: int, box: tuple[int, int, int, int]) -> Image.Image:
    array = np.zeros((h, w, 3), dtype=np.uint8)
    array[box[1] : box[3], box[0] : box[2]] = 255
    return Image.fromarray(array)


def test_short_side_resize_caps_each_side_independently():
    assert resize_short_side((48, 40), 480, 672) == (480, 576)  # (h, w): 480 * 48 / 40 = 576
    assert resize_short_side((100, 20), 50, 120) == (50, 120)  # 250 capped to 120: aspect ratio changes
    assert resize_short_side((30, 60), 30, 50) == (50, 30)  # short side already 30: only the cap applies


def test_random_resize_scales_boxes_per_axis():
    sample = BoxedImage(_image(48, 40), torch.tensor([[4.0, 8.0, 20.0, 24.0]]), ["a"])
    out = RandomResize([80])(sample)
    assert out.image.size == (96, 80)
    assert out.boxes.tolist() == [[8.0, 16.0, 40.0, 48.0]]
    assert np.array_equal(np.array(out.image), np.array(sample.image.resize((96, 80), Image.BICUBIC)))


def test_object_center_crop_shifts_inside_the_image_and_keeps_boxes():
    # 576 x 480 image, box centre x 456: left = max(456 - 240 + min(576 - 456 - 240, 0), 0) = 96, top = 0
    sample = BoxedImage(_image(576, 480), torch.tensor([[360.0, 96.0, 552.0, 288.0], [0.0, 0.0, 50.0, 50.0]]))
    out = ObjectCenterCrop((480, 480))(sample)
    assert out.image.size == (480, 480)
    assert out.boxes.tolist() == [[264.0, 96.0, 456.0, 288.0], [0.0, 0.0, 0.0, 50.0]]  # clipped, not dropped
    assert np.array_equal(np.array(out.image), np.array(sample.image)[:, 96:576])


def test_object_center_crop_rounds_fractional_corners_like_pil():
    sample = BoxedImage(_image(40, 40), torch.tensor([[10.0, 10.0, 21.0, 21.0]]))
    out = ObjectCenterCrop((10, 10))(sample)  # centre 15.5: left = top = 10.5, PIL rounds half to even: 10
    assert np.array_equal(np.array(out.image), np.array(sample.image)[10:20, 10:20])
    assert out.boxes.tolist() == [[0.0, 0.0, 10.0, 10.0]]  # 21 - 10.5 = 10.5, clipped to the width 10


def test_horizontal_flip_mirrors_boxes():
    sample = BoxedImage(_image(40, 30), torch.tensor([[5.0, 2.0, 15.0, 12.0]]), ["cat"])
    random.seed(0)  # random.random() = 0.844 >= 0.5: no flip with p = 0.5
    assert RandomHorizontalFlip(0.5)(sample) is sample
    out = RandomHorizontalFlip(1.0)(sample)
    assert out.boxes.tolist() == [[25.0, 2.0, 35.0, 12.0]] and out.labels == ["cat"]
    assert np.array_equal(np.array(out.image), np.array(sample.image)[:, ::-1])


@pytest.mark.parametrize("seed", range(5))
def test_large_scale_jitter_boxes_follow_the_pixels(seed):
    box = (10, 20, 40, 50)
    sample = BoxedImage(_white_box_image(64, 80, box), torch.tensor([[float(v) for v in box]]), ["square"])
    with seeded_rngs(seed):
        out = LargeScaleJitter(48, 1.0, 1.5)(sample)
    assert out.image.size == (48, 48)
    ys, xs = np.nonzero(np.array(out.image)[..., 0] > 127)
    if len(out.boxes) == 0:
        assert len(xs) == 0  # the square was cropped away, and so was its box
        return
    x0, y0, x1, y1 = out.boxes[0].tolist()
    assert out.labels == ["square"] and 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
    assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1


def test_large_scale_jitter_drops_boxes_outside_the_crop():
    """A box covering the image always ends as the whole 50 x 50 crop; a 1-pixel corner box survives only when
    the random crop offset is (0, 0), so over a few seeds it is dropped (with its label) at least once."""
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 1.0, 1.0]])
    dropped = 0
    for seed in range(10):
        with seeded_rngs(seed):
            out = LargeScaleJitter(50, 1.4, 1.5)(BoxedImage(_image(100, 100), boxes, ["a", "b"]))
        assert out.labels[0] == "a" and out.boxes[0].tolist() == [0.0, 0.0, 50.0, 50.0]
        assert len(out.boxes) == len(out.labels) and bool((out.boxes[:, 2:] > out.boxes[:, :2]).all())
        dropped += out.labels == ["a"]
    assert dropped > 0


def test_large_scale_jitter_refuses_padding_scales():
    with pytest.raises(ValueError, match="pad below scale 1"):
        LargeScaleJitter(256, 0.5, 1.5)
