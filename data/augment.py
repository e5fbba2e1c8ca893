"""OFA's ``RandomAugment`` (``utils/vision_helper.py``): N random operations of magnitude M on an image.

Used by OFA's ImageNet finetuning (``RandomAugment(2, 7, augs=[...])`` after timm's RandAugment, spec §4.6) and
by pretraining. The behaviour reproduced here:

* ``n`` operations are drawn **with replacement** from ``augs`` (``np.random.choice``); each one is then skipped
  when ``random() > 0.5``; a kept shear/translate/rotate draws its sign only after that. All draws come from
  numpy's global generator unless an ``rng`` is given, in the original's order.
* The input is a PIL image or an H x W x C uint8 array; the output is **always a uint8 numpy array** (the
  original's ``isPIL=True`` converts and never converts back; ``ToTensor`` accepts arrays).
* Magnitudes: MAX_LEVEL 10; enhance factor ``m/10*1.8+0.1``; shear ``m/10*0.3``; translate ``m/10*10`` pixels
  (absolute, whatever the image size); rotate ``m/10*30`` degrees; solarize threshold ``int(m/10*256)``; posterize
  ``int(m/10*4)`` bits; geometric fill (128, 128, 128).
* The original uses OpenCV. Its ``warpAffine`` (bilinear, constant border) is redone in numpy with OpenCV's
  fixed-point arithmetic (positions rounded to 1/32 pixel, 15-bit weights, as OpenCV <= 4.10 computes it), so
  OpenCV is not needed. Sharpness' 3x3 smoothing is computed in float32 and rounded half to even as
  ``cv2.filter2D`` does; only ties that float32 summation order could flip may differ.

Quirks of the original kept on purpose (they change the training images):

* AutoContrast computes ``-low`` on a uint8 scalar, which wraps to ``256 - low``: a channel whose minimum is
  above 0 becomes all 255; only channels that contain 0 are stretched.
* Sharpness casts the blended float image to uint8 by truncation **modulo 256** (numpy's cast on x86).
* Posterize's mask ``255 << (8 - bits)`` is taken modulo 256 (old numpy wrapped it; numpy 2 raises).
* Color and Contrast use BGR luminance weights (0.114, 0.587, 0.299) although the arrays are RGB.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

MAX_LEVEL = 10
TRANSLATE_CONST = 10
FILL = (128, 128, 128)
_AB_BITS, _INTER_BITS = 10, 5  # OpenCV's warpAffine fixed-point precision
_TAB = 1 << _INTER_BITS


# ---------------------------------------------------------------------------------------------- geometry
def _invert_affine(matrix: np.ndarray) -> np.ndarray:
    """OpenCV's inversion of a forward 2x3 map (warpAffine without WARP_INVERSE_MAP), in float64."""
    m = np.asarray(matrix, dtype=np.float64)
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    inv_det = 1.0 / det if det != 0 else 0.0
    a11, a12 = m[1, 1] * inv_det, -m[0, 1] * inv_det
    a21, a22 = -m[1, 0] * inv_det, m[0, 0] * inv_det
    b1 = -a11 * m[0, 2] - a12 * m[1, 2]
    b2 = -a21 * m[0, 2] - a22 * m[1, 2]
    return np.array([[a11, a12, b1], [a21, a22, b2]])


def _source_positions(inverse: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Source positions of every output pixel in 1/32 pixels, rounded the way OpenCV's integer path does."""
    scale, round_delta = 1 << _AB_BITS, (1 << _AB_BITS) // _TAB // 2
    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    x_step = np.rint(inverse[0, 0] * xs * scale).astype(np.int64)
    y_step = np.rint(inverse[1, 0] * xs * scale).astype(np.int64)
    x_row = np.rint((inverse[0, 1] * ys + inverse[0, 2]) * scale).astype(np.int64) + round_delta
    y_row = np.rint((inverse[1, 1] * ys + inverse[1, 2]) * scale).astype(np.int64) + round_delta
    shift = _AB_BITS - _INTER_BITS
    return (x_row[:, None] + x_step[None]) >> shift, (y_row[:, None] + y_step[None]) >> shift


def warp_affine(img: np.ndarray, matrix: np.ndarray, fill: Sequence[int] = FILL) -> np.ndarray:
    """``cv2.warpAffine(img, matrix, (W, H), borderValue=fill)`` for uint8 H x W x C: bilinear, constant border."""
    height, width, channels = img.shape
    pos_x, pos_y = _source_positions(_invert_affine(matrix), height, width)
    x0, fx = pos_x >> _INTER_BITS, (pos_x & (_TAB - 1))[..., None]
    y0, fy = pos_y >> _INTER_BITS, (pos_y & (_TAB - 1))[..., None]
    padded = np.empty((height + 2, width + 2, channels), dtype=np.int64)
    padded[...] = np.asarray(fill[:channels], dtype=np.int64)
    padded[1:-1, 1:-1] = img

    def at(y: np.ndarray, x: np.ndarray) -> np.ndarray:  # neighbours outside the image read the fill value
        return padded[np.clip(y, -1, height) + 1, np.clip(x, -1, width) + 1]

    top = (_TAB - fx) * at(y0, x0) + fx * at(y0, x0 + 1)
    bottom = (_TAB - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)
    acc = (_TAB - fy) * top + fy * bottom  # weights sum to 1024; OpenCV's 15-bit weights are these times 32
    return ((acc * 32 + (1 << 14)) >> 15).astype(np.uint8)


def rotate(img: np.ndarray, degree: float, fill: Sequence[int] = FILL) -> np.ndarray:
    """Counter-clockwise rotation about (W/2, H/2), as ``cv2.getRotationMatrix2D`` + ``warpAffine``."""
    height, width = img.shape[:2]
    cx, cy = width / 2, height / 2
    angle = degree * (math.pi / 180)
    alpha, beta = math.cos(angle), math.sin(angle)
    matrix = [[alpha, beta, (1 - alpha) * cx - beta * cy], [-beta, alpha, beta * cx + (1 - alpha) * cy]]
    return warp_affine(img, np.array(matrix), fill)


def shear_x(img: np.ndarray, factor: float, fill: Sequence[int] = FILL) -> np.ndarray:
    """Output x + factor * y reads source x (forward map [[1, f, 0], [0, 1, 0]] in float32)."""
    return warp_affine(img, np.float32([[1, factor, 0], [0, 1, 0]]), fill)


def shear_y(img: np.ndarray, factor: float, fill: Sequence[int] = FILL) -> np.ndarray:
    """Output y + factor * x reads source y (forward map [[1, 0, 0], [f, 1, 0]] in float32)."""
    return warp_affine(img, np.float32([[1, 0, 0], [factor, 1, 0]]), fill)


def translate_x(img: np.ndarray, offset: float, fill: Sequence[int] = FILL) -> np.ndarray:
    """Shift left by ``offset`` pixels (output x reads source x + offset)."""
    return warp_affine(img, np.float32([[1, 0, -offset], [0, 1, 0]]), fill)


def translate_y(img: np.ndarray, offset: float, fill: Sequence[int] = FILL) -> np.ndarray:
    """Shift up by ``offset`` pixels (output y reads source y + offset)."""
    return warp_affine(img, np.float32([[1, 0, 0], [0, 1, -offset]]), fill)


# ---------------------------------------------------------------------------------------------- pixel ops
def identity(img: np.ndarray) -> np.ndarray:
    """The image unchanged."""
    return img


def _wrap_uint8(values: np.ndarray) -> np.ndarray:
    """Truncate toward zero, then keep the low 8 bits: the original's out-of-range float -> uint8 cast."""
    return (values.astype(np.int64) % 256).astype(np.uint8)


def autocontrast(img: np.ndarray) -> np.ndarray:
    """Per channel, map [min, max] onto [0, 255], with the original's wrapped ``-min`` (module docstring)."""
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        channel = img[..., c]
        high, low = int(channel.max()), int(channel.min())
        if high <= low:
            out[..., c] = channel
            continue
        scale = 255 / (high - low)
        table = np.arange(256) * scale + ((256 - low) % 256) * scale
        out[..., c] = np.clip(table, 0, 255).astype(np.uint8)[channel]
    return out


def equalize(img: np.ndarray) -> np.ndarray:
    """Histogram equalisation per channel with PIL's rule (as the original's OpenCV version)."""
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        channel = img[..., c]
        hist = np.bincount(channel.ravel(), minlength=256).astype(np.float64)
        step = hist[hist != 0][:-1].sum() // 255
        if step == 0:
            out[..., c] = channel
            continue
        counts = np.concatenate([[step // 2], hist[:-1]])
        out[..., c] = np.clip(np.cumsum(counts) // step, 0, 255).astype(np.uint8)[channel]
    return out


def solarize(img: np.ndarray, thresh: int = 128) -> np.ndarray:
    """Invert the levels at or above ``thresh``."""
    levels = np.arange(256)
    return np.where(levels < thresh, levels, 255 - levels).astype(np.uint8)[img]


def color(img: np.ndarray, factor: float) -> np.ndarray:
    """Saturation: blend with grey by a float32 colour matrix (BGR weights, as the original)."""
    weights = np.float32([[0.886, -0.114, -0.114], [-0.587, 0.413, -0.587], [-0.299, -0.299, 0.701]])
    matrix = weights * np.float32(factor) + np.float32([[0.114], [0.587], [0.299]])
    return np.matmul(img, matrix).clip(0, 255).astype(np.uint8)


def contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """Scale the levels about the image's (BGR-weighted) mean, truncated to uint8."""
    mean = float(np.sum(np.mean(img, axis=(0, 1)) * np.array([0.114, 0.587, 0.299])))
    table = (np.arange(256) - mean) * factor + mean
    return table.clip(0, 255).astype(np.uint8)[img]


def brightness(img: np.ndarray, factor: float) -> np.ndarray:
    """Multiply the levels by ``factor`` in float32, clipped and truncated to uint8."""
    table = (np.arange(256, dtype=np.float32) * np.float32(factor)).clip(0, 255).astype(np.uint8)
    return table[img]


def _smooth(img: np.ndarray) -> np.ndarray:
    """``cv2.filter2D`` with the kernel [[1,1,1],[1,5,1],[1,1,1]]/13, reflect-101 border, rounded to uint8."""
    kernel = np.ones((3, 3), dtype=np.float32)
    kernel[1, 1] = 5
    kernel /= 13
    height, width = img.shape[:2]
    padded = np.pad(img.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="reflect")
    acc = np.zeros(img.shape, dtype=np.float32)
    for dy in range(3):
        for dx in range(3):
            acc += kernel[dy, dx] * padded[dy : dy + height, dx : dx + width]
    return np.rint(acc).clip(0, 255).astype(np.uint8)


def sharpness(img: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the smoothed image inside a 1-pixel frame (the frame keeps the original pixels)."""
    degenerate = _smooth(img)
    if factor == 0.0:
        return degenerate
    if factor == 1.0:
        return img
    out = img.astype(np.float32)
    inner = degenerate.astype(np.float32)[1:-1, 1:-1]
    out[1:-1, 1:-1] = inner + np.float32(factor) * (out[1:-1, 1:-1] - inner)
    return _wrap_uint8(out)


def posterize(img: np.ndarray, bits: int) -> np.ndarray:
    """Keep the top ``bits`` bits of each level."""
    return np.bitwise_and(img, np.uint8((255 << (8 - bits)) % 256))


OPS: dict[str, Callable[..., np.ndarray]] = {
    "Identity": identity,
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    "Rotate": rotate,
    "Solarize": solarize,
    "Color": color,
    "Contrast": contrast,
    "Brightness": brightness,
    "Sharpness": sharpness,
    "ShearX": shear_x,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
    "Posterize": posterize,
    "ShearY": shear_y,
}  # the original's order: the default ``augs`` list, so ``choice`` indices line up


# ---------------------------------------------------------------------------------------------- magnitudes
def op_args(name: str, level: float, rng: Any = np.random) -> tuple:
    """The original's ``arg_dict[name](level)``: the op's arguments, drawing a random sign where it does."""
    fraction = level / MAX_LEVEL
    if name in ("Identity", "AutoContrast", "Equalize"):
        return ()
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (fraction * 1.8 + 0.1,)
    if name == "Solarize":
        return (int(fraction * 256),)
    if name == "Posterize":
        return (int(fraction * 4),)
    if name in ("ShearX", "ShearY", "TranslateX", "TranslateY"):
        value = fraction * (0.3 if name.startswith("Shear") else float(TRANSLATE_CONST))
        return (-value if rng.random() > 0.5 else value, FILL)
    if name == "Rotate":
        value = fraction * 30
        return (-value if rng.random() < 0.5 else value, FILL)
    raise KeyError(f"unknown RandomAugment op {name!r}; known: {sorted(OPS)}")


class RandomAugment:
    """OFA's ``RandomAugment(N, M, isPIL, augs)``: ``n`` ops from ``augs`` (default: all 14), magnitude ``m``.

    ``rng`` is a ``np.random.RandomState`` or None for numpy's global generator (the original's).
    """

    def __init__(self, n: int = 2, m: float = 10, augs: Sequence[str] | None = None, rng: Any = None):
        unknown = sorted(set(augs or ()) - set(OPS))
        if unknown:
            raise ValueError(f"unknown RandomAugment ops {unknown}; known: {list(OPS)}")
        self.n, self.m = n, m
        self.augs = list(augs) if augs else list(OPS)
        self.rng = rng

    def sample_ops(self) -> list[str]:
        """The ``n`` op names, drawn with replacement (``np.random.choice(augs, n)``)."""
        rng = self.rng if self.rng is not None else np.random
        return [self.augs[i] for i in rng.choice(len(self.augs), self.n)]

    def __call__(self, img: Image.Image | np.ndarray) -> np.ndarray:
        rng = self.rng if self.rng is not None else np.random
        array = np.array(img)  # a writable copy, as the original's np.array(img)
        if array.ndim != 3 or array.dtype != np.uint8:
            raise ValueError(f"RandomAugment expects an H x W x C uint8 image, got {array.dtype} {array.shape}")
        for name in self.sample_ops():
            if rng.random() > 0.5:
                continue
            array = OPS[name](array, *op_args(name, self.m, rng))
        return array

    def __repr__(self) -> str:
        return f"RandomAugment(n={self.n}, m={self.m}, augs={self.augs})"


# ---------------------------------------------------------------------------------------------- reproducibility
@contextlib.contextmanager
def seeded_rngs(*key: int) -> Iterator[None]:
    """Seed python's ``random``, numpy's global generator and torch's CPU generator from ``key`` inside the
    block (e.g. ``(seed, epoch, row index)``), then restore all three, so augmentations are reproducible
    (resumes, any number of DataLoader workers) without disturbing anyone else's random stream.

    CUDA generators are not touched. The three seeds are one 32-bit value drawn from numpy's ``SeedSequence``
    of ``key`` (negative parts are taken modulo 2**64).
    """
    seed = int(np.random.SeedSequence([int(k) % 2**64 for k in key]).generate_state(1)[0])
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
