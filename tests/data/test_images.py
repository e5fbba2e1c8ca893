"""Tests for data/images.py: base64 image columns as OFA stores them, and their error messages."""

import base64
import io

import pytest
from PIL import Image, ImageFile

from data.images import allow_truncated_images, decode_base64_image, encode_image_base64, load_image


def _image(mode: str = "RGB", size: tuple[int, int] = (7, 5)) -> Image.Image:
    # distinct pixels so a round trip that scrambles, resizes or recolours them would show
    width, height = size
    image = Image.new("RGB", size)
    image.putdata([((x * 37) % 256, (y * 51) % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    return image if mode == "RGB" else image.convert(mode)


def _jpeg_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    _image(size=size).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_png_round_trip_is_lossless_and_urlsafe():
    image = _image()
    encoded = encode_image_base64(image)
    assert "+" not in encoded and "/" not in encoded
    decoded = decode_base64_image(encoded)
    assert decoded.mode == "RGB" and decoded.size == (7, 5)
    assert decoded.tobytes() == image.tobytes()


def test_decode_matches_what_ofa_does_with_urlsafe_b64decode():
    encoded = encode_image_base64(_image(), format="JPEG")
    reference = Image.open(io.BytesIO(base64.urlsafe_b64decode(encoded))).convert("RGB")
    assert decode_base64_image(encoded).tobytes() == reference.tobytes()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_are_converted_to_rgb(mode):
    image = _image(mode)
    decoded = decode_base64_image(encode_image_base64(image))
    assert decoded.mode == "RGB"
    assert decoded.tobytes() == image.convert("RGB").tobytes()


def test_standard_alphabet_missing_padding_and_line_breaks_are_accepted():
    raw = _jpeg_bytes()
    standard = base64.b64encode(raw).decode()
    assert "+" in standard or "/" in standard  # the test exercises the alphabet difference
    expected = decode_base64_image(base64.urlsafe_b64encode(raw).decode()).tobytes()
    unpadded = standard.rstrip("=")
    wrapped = "\n".join(standard[i : i + 76] for i in range(0, len(standard), 76))
    for variant in (standard, unpadded, wrapped, " " + standard + "\n"):
        assert decode_base64_image(variant).tobytes() == expected


@pytest.mark.parametrize("bad", ["not*base64!", "abcde", "ab$d"])
def test_invalid_base64_says_so(bad):
    with pytest.raises(ValueError, match="^not base64"):
        decode_base64_image(bad)


def test_empty_data_says_so():
    with pytest.raises(ValueError, match="empty image data"):
        decode_base64_image("  ")


def test_non_image_bytes_give_a_short_reason():
    text = base64.urlsafe_b64encode(b"this is plain text, not a picture").decode()
    with pytest.raises(ValueError, match=r"^not an image PIL can read \(UnidentifiedImageError") as info:
        decode_base64_image(text)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_truncated_image_loads_and_the_pil_flag_is_restored():
    raw = _jpeg_bytes((128, 96))
    truncated = base64.urlsafe_b64encode(raw[: len(raw) * 2 // 3]).decode()
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    image = decode_base64_image(truncated)
    assert image.size == (128, 96) and image.mode == "RGB"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    # without the allowance PIL refuses the same bytes, so the flag is what made it load
    with pytest.raises(OSError, match="truncated"):
        Image.open(io.BytesIO(base64.urlsafe_b64decode(truncated))).load()


def test_allow_truncated_images_restores_on_error():
    with pytest.raises(RuntimeError), allow_truncated_images():
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
        raise RuntimeError
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_load_image_from_file_or_base64(tmp_path):
    image = _image()
    path = tmp_path / "x.png"
    image.save(path)
    for source in (str(path), path, encode_image_base64(image)):
        loaded = load_image(source)
        assert loaded.mode == "RGB" and loaded.tobytes() == image.tobytes()


def test_load_image_errors(tmp_path):
    not_image = tmp_path / "x.png"
    not_image.write_text("hello")
    with pytest.raises(ValueError, match=r"x\.png: not an image PIL can read"):
        load_image(str(not_image))
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="neither an existing image file nor base64 image data: not base64"):
        load_image(str(tmp_path / "missing.png"))
