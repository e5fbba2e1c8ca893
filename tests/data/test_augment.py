"""OFA's RandomAugment: draw order, op values computed by hand (OpenCV's fixed-point warps), kept quirks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from data import augment
from data.augment import RandomAugment, op_args, seeded_rngs


def _image(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def _expected_ops(seed: int, augs: list[str], n: int) -> list[tuple[str, bool]]:
    """The original's draws, by hand: n choices with replacement, then one coin per op (plus its sign)."""
    rng = np.random.RandomState(seed)
    names = [augs[i] for i in rng.randint(0, len(augs), n)]
    out = []
    for name in names:
        applied = not rng.random() > 0.5
        if applied and name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
            rng.random()
        out.append((name, applied))
    return out


def test_random_augment_applies_n_drawn_ops_in_the_originals_order(monkeypatch):
    augs = ["Brightness", "Posterize", "TranslateX"]
    calls: list[str] = []
    for name in augs:
        real = augment.OPS[name]
        monkeypatch.setitem(augment.OPS, name, lambda img, *a, _n=name, _f=real: calls.append(_n) or _f(img, *a))
    for seed in range(20):
        calls.clear()
        expected = _expected_ops(seed, augs, 3)
        out = RandomAugment(3, 7, augs=augs, rng=np.random.RandomState(seed))(Image.fromarray(_image()))
        assert calls == [name for name, applied in expected if applied]
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (12, 10, 3)


def test_random_augment_uses_numpys_global_generator_by_default():
    img = _image()
    np.random.seed(5)
    first = RandomAugment(2, 7)(img)
    np.random.seed(5)
    assert np.array_equal(RandomAugment(2, 7)(img), first)
    expected = img  # the same draws by hand, with ops whose result is easy to build
    for name, applied in _expected_ops(3, ["Identity", "Brightness"], 2):
        if applied and name == "Brightness":
            expected = augment.brightness(expected, 1.36)
    np.random.seed(3)
    assert np.array_equal(RandomAugment(2, 7, augs=["Identity", "Brightness"])(img), expected)


def test_unknown_ops_are_errors():
    with pytest.raises(ValueError, match="unknown RandomAugment ops"):
        RandomAugment(2, 7, augs=["Blur"])
    with pytest.raises(KeyError):
        op_args("Blur", 7)


def test_magnitudes_at_level_7():
    class Coin:
        def __init__(self, value: float):
            self.value = value

        def random(self) -> float:
            return self.value

    assert op_args("Brightness", 7) == pytest.approx((1.36,))
    assert op_args("Solarize", 7) == (179,) and op_args("Posterize", 7) == (2,)
    assert op_args("ShearX", 7, Coin(0.2)) == (pytest.approx(0.21), (128, 128, 128))
    assert op_args("ShearX", 7, Coin(0.7))[0] == pytest.approx(-0.21)
    assert op_args("TranslateY", 7, Coin(0.7))[0] == pytest.approx(-7.0)
    assert op_args("Rotate", 7, Coin(0.2))[0] == pytest.approx(-21.0)  # rotate flips on random() < 0.5
    assert op_args("Rotate", 7, Coin(0.7))[0] == pytest.approx(21.0)


def test_translate_moves_whole_pixels_and_fills_grey():
    img = _image()
    out = augment.translate_x(img, 7.0)
    assert np.array_equal(out[:, :3], img[:, 7:]) and (out[:, 3:] == 128).all()
    down = augment.translate_y(img, -2.0)
    assert np.array_equal(down[2:], img[:-2]) and (down[:2] == 128).all()


def test_rotate_uses_opencvs_centre_w_over_2():
    """cv2.getRotationMatrix2D((W/2, H/2), 90, 1): np.rot90 shifted down one row, the top row grey."""
    img = _image(8, 8)
    out = augment.rotate(img, 90.0)
    assert np.array_equal(out[1:], np.rot90(img)[:-1]) and (out[0] == 128).all()


def test_shear_uses_thirty_seconds_of_a_pixel_and_half_up_rounding():
    """Row 1 of ShearX(0.21) samples x - 0.21, which OpenCV rounds to x - 1 + 25/32: (7 a + 25 b) / 32."""
    img = np.zeros((2, 4, 3), dtype=np.uint8)
    img[1, :, :] = np.array([0, 64, 128, 255], dtype=np.uint8)[:, None]
    out = augment.shear_x(img, 0.21)
    assert (out[0] == 0).all()
    assert out[1, :, 0].tolist() == [28, 50, 114, 227]  # x=0 mixes the grey fill: 7*128/32 = 28


def test_autocontrast_matches_pil_when_every_channel_has_a_zero():
    img = _image(16, 16)
    img[0, 0] = 0
    ours = augment.autocontrast(img)
    assert np.array_equal(ours, np.asarray(ImageOps.autocontrast(Image.fromarray(img))))


def test_autocontrast_keeps_the_originals_wrapped_minimum():
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    img[..., 0] = [[0, 50], [100, 100]]  # min 0: stretched, level * (255 / 100) truncated (100 * 2.55 < 255)
    img[..., 1] = [[10, 20], [30, 40]]  # min 10: -np.uint8(10) is 246 -> every entry saturates
    img[..., 2] = 7  # flat: unchanged
    out = augment.autocontrast(img)
    assert out[..., 0].tolist() == [[0, 127], [254, 254]]
    assert (out[..., 1] == 255).all() and (out[..., 2] == 7).all()


def test_equalize_matches_pil():
    img = _image(20, 24, seed=3) // 3
    assert np.array_equal(augment.equalize(img), np.asarray(ImageOps.equalize(Image.fromarray(img))))


def test_pixel_ops_by_hand():
    img = np.array([[[100, 200, 0]]], dtype=np.uint8)
    assert augment.brightness(img, 1.36).tolist() == [[[136, 255, 0]]]
    assert augment.solarize(img, 179).tolist() == [[[100, 55, 0]]]
    assert augment.posterize(img, 2).tolist() == [[[64, 192, 0]]]
    flat = np.zeros((2, 2, 3), dtype=np.uint8)
    flat[..., 0] = 100  # red only: BGR weights give mean 0.114 * 100 = 11.4, not 0.299 * 100
    assert (augment.contrast(flat, 0.0) == 11).all()


def test_sharpness_wraps_out_of_range_values_like_the_original():
    img = np.zeros((3, 3, 1), dtype=np.uint8)
    img[1, 1] = 255  # smoothed centre: round(5 * 255 / 13) = 98; 98 + 1.36 * (255 - 98) = 311.5 -> 311 % 256
    out = augment.sharpness(img, 1.36)
    assert out[1, 1, 0] == 55 and out[0].tolist() == img[0].tolist()


def test_seeded_rngs_are_reproducible_and_restore_global_state():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    expected = random.random(), np.random.random(), torch.rand(1).item()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    with seeded_rngs(1, 2, 3):
        first = random.random(), np.random.random(), torch.rand(1).item()
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected
    with seeded_rngs(1, 2, 3):
        assert (random.random(), np.random.random(), torch.rand(1).item()) == first
    with seeded_rngs(1, 3, 3):
        assert random.random() != first[0]
