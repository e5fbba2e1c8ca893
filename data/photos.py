"""Real photographs for the embedded demo, taken from scikit-image's bundled sample images (no download).

Each photo has a caption, a question with its answer and one referring expression with its box, all written for
this project by looking at the image (boxes in the original image's pixels, ``x0,y0,x1,y1``). ``photo_rows`` turns
them into the same TSV lines as the shapes world (``data/shapes.py``), with the image downscaled so its longer
side is ``size`` pixels and the box scaled with it. ``LICENSES`` records where each image comes from and its
licence, as scikit-image documents them; ``write_licenses`` writes that table next to the dataset.

The demo trains on these photos and shows what the model says about them afterwards: with a handful of photos
this shows the pipeline working on real images, not generalisation to unseen ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from data.images import encode_image_base64


@dataclass(frozen=True)
class Photo:
    """One annotated sample image of ``skimage.data``."""

    name: str  # the skimage.data loader
    caption: str
    question: str
    answer: str
    expression: str
    box: tuple[int, int, int, int]  # in the original image's pixels


PHOTOS = (
    Photo("astronaut", "a woman in an orange space suit smiling", "what color is the suit?", "orange",
          "the helmet", (275, 340, 505, 512)),
    Photo("chelsea", "a close up of a tabby cat with green eyes", "what animal is this?", "cat",
          "the nose of the cat", (236, 220, 294, 264)),
    Photo("coffee", "a cup of coffee on a red saucer with a spoon", "what is in the cup?", "coffee",
          "the cup", (170, 15, 415, 305)),
    Photo("rocket", "a rocket on a launch pad at dusk", "what is on the launch pad?", "rocket",
          "the rocket", (300, 125, 342, 410)),
    Photo("camera", "a man looking through a camera on a tripod", "what is the man holding?", "camera",
          "the man", (0, 65, 335, 512)),
    Photo("stereo_motorcycle", "a red motorcycle parked in a garage", "what color is the motorcycle?", "red",
          "the motorcycle", (90, 100, 690, 452)),
)  # fmt: skip

LICENSES = {
    "astronaut": "Eileen Collins, NASA (https://flic.kr/p/r9qvLn): no known copyright restrictions, public domain",
    "chelsea": "Stefan van der Walt: CC0",
    "coffee": "Rachel Michetti: CC0",
    "rocket": "SpaceX (https://www.flickr.com/photos/spacexphotos/16511594820): released into the public domain",
    "camera": "Lav Varshney: CC0",
    "stereo_motorcycle": "Middlebury stereo dataset 2014 (http://vision.middlebury.edu/stereo/data/scenes2014/), "
    "left view, as distributed with scikit-image",
}


def load_photo(photo: Photo) -> Image.Image:
    """The full-size RGB image of ``photo`` from scikit-image's package data (shipped, never downloaded)."""
    try:
        import skimage.data
    except ImportError as err:
        raise RuntimeError("the demo's photographs come from scikit-image: pip install -r requirements.txt") from err
    array = getattr(skimage.data, photo.name)()
    if photo.name == "stereo_motorcycle":
        array = array[0]  # (left, right, disparity): the left view
    return Image.fromarray(np.asarray(array)).convert("RGB")


def scaled(photo: Photo, size: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The image downscaled so its longer side is ``size`` and its box scaled alike (rounded outwards)."""
    image = load_photo(photo)
    scale = size / max(image.size)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    x0, y0, x1, y1 = photo.box
    box = (int(x0 * scale), int(y0 * scale), min(w, int(np.ceil(x1 * scale))), min(h, int(np.ceil(y1 * scale))))
    return image.resize((w, h), Image.BICUBIC), box


def photo_rows(first_id: int, size: int = 96, copies: int | dict[str, int] = 1) -> dict[str, list[str]]:
    """TSV lines for caption, vqa_gen and refcoco: each photo ``copies`` times (one count, or one per task), ids
    from ``first_id`` up."""
    lines: dict[str, list[str]] = {"caption": [], "vqa_gen": [], "refcoco": []}
    counts = copies if isinstance(copies, dict) else dict.fromkeys(lines, copies)
    for k, photo in enumerate(PHOTOS):
        image, box = scaled(photo, size)
        b64 = encode_image_base64(image, "JPEG")
        for task, count in counts.items():
            for c in range(count):
                uid = first_id + k * count + c
                lines[task].append(
                    {
                        "caption": f"{uid}\t{uid}\t{photo.caption}\t\t{b64}",
                        "vqa_gen": f"{uid}\t{uid}\t{photo.question}\t1.0|!+{photo.answer}\t\t{b64}",
                        "refcoco": f"{uid}\t{uid}\t{photo.expression}\t{','.join(map(str, box))}\t{b64}",
                    }[task]
                )
    return lines


def all_texts() -> list[str]:
    """Captions, questions, answers and expressions (tokenizer training text)."""
    return [f"{p.caption} {p.question} {p.answer} {p.expression}" for p in PHOTOS]


def write_licenses(out: Path) -> Path:
    """Write ``PHOTO_LICENSES.txt`` (image, source and licence for every photo) into ``out``."""
    path = Path(out) / "PHOTO_LICENSES.txt"
    lines = ["Photographs from scikit-image's sample data (skimage.data), as documented there:", ""]
    lines += [f"{p.name}: {LICENSES[p.name]}" for p in PHOTOS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
