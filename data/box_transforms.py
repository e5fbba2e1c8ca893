"""Image transforms that carry bounding boxes along, as OFA's ``utils/transforms.py`` (DETR-style) does.

Used by pretraining (spec §4.9): visual grounding resizes with ``RandomResize(range(S, 481), max_size=672)`` and
crops around the object (``ObjectCenterCrop``); detection flips (``RandomHorizontalFlip``) and applies large-scale
jitter (``LargeScaleJitter``). Boxes are ``(N, 4)`` float32 ``x0, y0, x1, y1`` in pixels of the current image.

Behaviour kept from the original:

* ``RandomResize`` sets the short side to a random size from ``sizes`` keeping the aspect ratio (the long side
  truncated to an int), then caps **each** side at ``max_size`` independently, which can change the aspect ratio.
  Resizing is PIL bicubic; boxes scale by ``new / old`` per axis (ratios rounded to float32).
* ``ObjectCenterCrop`` centres the crop on the first box, shifted to stay inside the image, with fractional
  offsets that PIL rounds (Python's round) while the boxes move by the exact offsets; boxes are clipped to the
  crop and kept even when empty.
* ``LargeScaleJitter`` draws a scale in ``[min, max)`` (torch), sets ``target = round(scale * output)``, scales
  both sides by ``max(target / H, target / W)`` (rounded to ints; so the short side becomes ``target``), crops an
  ``output x output`` window at a random offset (torch) and drops boxes left with no area. Box ratios are float32
  divisions here, as in the original. Scales below 1 (padding) are refused, as the original asserts.
* ``RandomHorizontalFlip`` flips with probability ``p`` (Python's ``random``): ``x0' = W - x1``, ``x1' = W - x0``.

Random draws use the global generators (python ``random`` and torch), so callers seed them
(``data.augment.seeded_rngs``) for reproducible streams.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from PIL import Image
from torch import Tensor


@dataclass
class BoxedImage:
    """A PIL image with its boxes ``(N, 4)`` (pixels, float32) and one label per box."""

    image: Image.Image
    boxes: Tensor = field(default_factory=lambda: torch.zeros(0, 4))
    labels: list[str] = field(default_factory=list)


def _resize(sample: BoxedImage, height: int, width: int, ratios: Tensor | None = None) -> BoxedImage:
    """PIL bicubic resize; boxes scale by ``ratios`` (x, y) or by float64 ``new / old`` rounded to float32."""
    old_w, old_h = sample.image.size
    image = sample.image.resize((width, height), Image.BICUBIC)
    if ratios is None:
        ratios = torch.as_tensor([width / old_w, height / old_h])
    return replace(sample, image=image, boxes=sample.boxes * ratios.repeat(2))


def _crop(sample: BoxedImage, top: float, left: float, height: int, width: int) -> BoxedImage:
    """Crop (PIL rounds fractional corners) and clip the boxes to the window; empty boxes are kept."""
    image = sample.image.crop((left, top, left + width, top + height))
    boxes = sample.boxes - torch.as_tensor([left, top, left, top])
    boxes = torch.min(boxes.reshape(-1, 2, 2), torch.as_tensor([width, height], dtype=torch.float32))
    return replace(sample, image=image, boxes=boxes.clamp(min=0).reshape(-1, 4))


def _drop_empty(sample: BoxedImage) -> BoxedImage:
    corners = sample.boxes.reshape(-1, 2, 2)
    keep = (corners[:, 1, :] > corners[:, 0, :]).all(dim=1)
    labels = [label for label, kept in zip(sample.labels, keep.tolist(), strict=True) if kept]
    return replace(sample, boxes=sample.boxes[keep], labels=labels)


def resize_short_side(size: tuple[int, int], short: int, max_size: int | None) -> tuple[int, int]:
    """The original's ``get_size_with_aspect_ratio``: (height, width) for a (width, height) image."""
    w, h = size
    if (w <= h and w == short) or (h <= w and h == short):
        out_h, out_w = h, w
    elif w < h:
        out_w, out_h = short, int(short * h / w)
    else:
        out_h, out_w = short, int(short * w / h)
    if max_size is not None:
        out_h, out_w = min(out_h, max_size), min(out_w, max_size)
    return out_h, out_w


class RandomResize:
    def __init__(self, sizes: Sequence[int], max_size: int | None = None):
        self.sizes, self.max_size = list(sizes), max_size

    def __call__(self, sample: BoxedImage) -> BoxedImage:
        short = random.choice(self.sizes)
        return _resize(sample, *resize_short_side(sample.image.size, short, self.max_size))


class ObjectCenterCrop:
    def __init__(self, size: tuple[int, int]):
        self.height, self.width = size

    def __call__(self, sample: BoxedImage) -> BoxedImage:
        image_w, image_h = sample.image.size
        x0, y0, x1, y1 = (float(v) for v in sample.boxes[0])
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = max(cx - self.width / 2 + min(image_w - cx - self.width / 2, 0), 0)
        top = max(cy - self.height / 2 + min(image_h - cy - self.height / 2, 0), 0)
        return _crop(sample, top, left, self.height, self.width)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample: BoxedImage) -> BoxedImage:
        if random.random() >= self.p:
            return sample
        width = sample.image.width
        boxes = sample.boxes[:, [2, 1, 0, 3]] * torch.as_tensor([-1, 1, -1, 1]) + torch.as_tensor([width, 0, width, 0])
        return replace(sample, image=sample.image.transpose(Image.FLIP_LEFT_RIGHT), boxes=boxes)


class LargeScaleJitter:
    """Copy-paste's large-scale jitter, as OFA's detection pretraining uses it (output 256, scale 1.0-1.5)."""

    def __init__(self, output_size: int = 512, aug_scale_min: float = 0.3, aug_scale_max: float = 2.0):
        if aug_scale_min < 1.0:
            raise ValueError(f"LargeScaleJitter would pad below scale 1 (the original never does): {aug_scale_min}")
        self.output_size, self.scale_min, self.scale_max = output_size, aug_scale_min, aug_scale_max

    def __call__(self, sample: BoxedImage) -> BoxedImage:
        size = torch.tensor(sample.image.size[::-1])  # (H, W)
        scale = torch.rand(1) * (self.scale_max - self.scale_min) + self.scale_min
        target = (scale * self.output_size).round()
        factor = torch.maximum(target / size[0], target / size[1])
        scaled = (size * factor).round().int()  # (H', W'), both >= target
        ratios = (scaled / size).flip(0)  # float32 (x, y)
        sample = _resize(sample, int(scaled[0]), int(scaled[1]), ratios)
        offset = ((scaled - self.output_size) * torch.rand(2)).floor().int()  # (top, left)
        sample = _crop(sample, int(offset[0]), int(offset[1]), self.output_size, self.output_size)
        return _drop_empty(sample)
