"""Images stored as base64 strings in OFA's TSV files: decode (as OFA's datasets do), encode, load.

OFA's datasets decode an image column with ``base64.urlsafe_b64decode`` and open the bytes with PIL, with
``ImageFile.LOAD_TRUNCATED_IMAGES = True`` set globally at import time so that a truncated JPEG/PNG still
loads (spec section 3.1). Here:

* both base64 alphabets (urlsafe ``-_`` and standard ``+/``), missing ``=`` padding and embedded whitespace
  are accepted, so files produced by other tools work too;
* truncated images are tolerated only while this module decodes (``allow_truncated_images`` sets PIL's
  process-wide flag and restores it afterwards, instead of changing it for the whole program);
* a row that is not an image raises ``ValueError`` with a one-line reason instead of a PIL traceback, so the
  TSV layer can report the file and line (``data.tsv.BadRowError``);
* an image of more than PIL's ``Image.MAX_IMAGE_PIXELS`` pixels is refused as a possible decompression bomb
  (PIL itself only warns below twice that size, after which decoding could allocate gigabytes);
* 16-bit grayscale keeps its top 8 bits (PIL's ``convert("RGB")`` clips such values at 255: a white image).
"""

import base64
import binascii
import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageFile

logger = logging.getLogger(__name__)

# the standard alphabet's two extra characters, mapped onto urlsafe's (OFA writes urlsafe)
_TO_URLSAFE = str.maketrans("+/", "-_")
# PIL cannot save these modes as JPEG
_JPEG_MODES = ("RGB", "L", "CMYK")
# integer modes wider than 8 bits (16-bit PNG/TIFF open as I;16 or I)
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@contextlib.contextmanager
def allow_truncated_images() -> Iterator[None]:
    """Let PIL load truncated image files inside the block, as OFA does everywhere.

    PIL's switch is a module global: threads decoding at the same time see it set for the whole block.
    DataLoader workers are processes, so in practice only this module's own decodes are affected.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _b64_bytes(data: str) -> bytes:
    text = "".join(data.split()).translate(_TO_URLSAFE)
    if not text:
        raise ValueError("empty image data")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (invalid characters or length)") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """``image.convert("RGB")``, except that 16-bit grayscale is reduced to its top 8 bits first."""
    if image.mode in _WIDE_MODES:
        values = np.asarray(image, dtype=np.int64)
        if image.mode != "I" or values.max(initial=0) > 255:  # mode I may also hold 8-bit data PIL widened
            image = Image.fromarray((values.clip(0, 65535) >> 8).astype(np.uint8))
    return image.convert("RGB")


@contextlib.contextmanager
def _pil_image(source: io.BytesIO | str | os.PathLike) -> Iterator[Image.Image]:
    """``Image.open`` with truncated files allowed and bomb warnings raised; PIL failures become ``ValueError``."""
    try:
        with allow_truncated_images(), warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # Image.open checks the size
            with Image.open(source) as image:
                yield image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(f"not an image PIL can read ({type(err).__name__}: {err})") from None


def _open_rgb(source: io.BytesIO | str | os.PathLike) -> Image.Image:
    """Open with PIL, fully decode and convert to RGB; PIL failures become a one-line ``ValueError``."""
    with _pil_image(source) as image:
        # converting forces the pixel data to be decoded here, inside the truncation allowance
        return _to_rgb(image)


def check_image_bytes(data: bytes) -> None:
    """Raise ``ValueError`` unless PIL identifies ``data`` as an image of an allowed size (reads the header only)."""
    with _pil_image(io.BytesIO(data)):
        pass


def decode_base64_image(data: str) -> Image.Image:
    """Decode a base64 image column (urlsafe or standard alphabet, padding optional) to an RGB image."""
    return _open_rgb(io.BytesIO(_b64_bytes(data)))


def encode_image_base64(image: Image.Image, format: str = "PNG") -> str:
    """Encode ``image`` as urlsafe base64 of its ``format`` bytes, the way OFA's TSV files store images."""
    if format.upper() in ("JPEG", "JPG") and image.mode not in _JPEG_MODES:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if format.upper() == "JPG" else format)
    return base64.urlsafe_b64encode(buffer.getvalue()).decode("ascii")


def load_image(path_or_base64: str | os.PathLike) -> Image.Image:
    """An RGB image from an existing file path, or else from a base64 string (for prediction and tools)."""
    if isinstance(path_or_base64, os.PathLike) or os.path.isfile(path_or_base64):
        path = os.fspath(path_or_base64)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file {path} does not exist")
        try:
            return _open_rgb(path)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    try:
        return decode_base64_image(path_or_base64)
    except ValueError as err:
        raise ValueError(f"neither an existing image file nor base64 image data: {err}") from None
