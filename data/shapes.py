"""A generated "shapes world" for the embedded demo: images of coloured shapes with exact annotations.

Each image (``size`` x ``size`` pixels, plain light background) holds one or two shapes (square, circle or
triangle in one of a few colours, never the same colour-and-kind twice). From the scene alone we know the exact
caption ("a red square and a blue circle", shapes listed left to right), VQA questions with their answers
("what color is the square?" -> "red", "how many shapes are there?" -> "two", "is there a circle?" -> "yes")
and referring expressions with their boxes ("the red square" -> ``x0,y0,x1,y1`` in pixels, end-exclusive).

``write_dataset`` writes OFA-format TSVs (caption, vqa_gen, refcoco; train and test splits), the answer list
pickle for ``--ans2label-file`` and a text file for training a tokenizer.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data.images import encode_image_base64

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 200, 20),
}
KINDS = ("square", "circle", "triangle")
BACKGROUND = (235, 235, 235)
NUMBERS = {1: "one", 2: "two"}

# selected columns for each task's TSV layout (OFA's --selected-cols)
SELECTED_COLS = {"caption": "0,4,2", "vqa_gen": "0,5,2,3,4", "refcoco": "0,4,2,3"}


@dataclass(frozen=True)
class Shape:
    """One drawn shape: kind, colour name and its box ``(x0, y0, x1, y1)`` in pixels (end-exclusive)."""

    kind: str
    color: str
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        """The referring expression: ``"the red square"``."""
        return f"the {self.color} {self.kind}"

    @property
    def center(self) -> tuple[int, int]:
        """The box centre (inside the shape for all three kinds)."""
        x0, y0, x1, y1 = self.box
        return (x0 + x1) // 2, (y0 + y1) // 2


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = 2) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def random_scene(rng: np.random.Generator, size: int = 64) -> list[Shape]:
    """One or two non-overlapping shapes with distinct (colour, kind), sorted left to right."""
    count = int(rng.integers(1, 3))
    shapes: list[Shape] = []
    while len(shapes) < count:
        side = int(rng.integers(size // 4, size // 2))
        x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        box = (x0, y0, x0 + side, y0 + side)
        kind, color = KINDS[int(rng.integers(len(KINDS)))], list(COLORS)[int(rng.integers(len(COLORS)))]
        if any(_overlaps(box, s.box) or (s.kind, s.color) == (kind, color) for s in shapes):
            continue
        shapes.append(Shape(kind, color, box))
    return sorted(shapes, key=lambda s: (s.box[0], s.box[1]))


def draw_scene(shapes: list[Shape], size: int = 64) -> Image.Image:
    """Render the shapes on a plain background (RGB, ``size`` x ``size``)."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        x0, y0, x1, y1 = shape.box
        corners = (x0, y0, x1 - 1, y1 - 1)  # PIL includes the end point
        fill = COLORS[shape.color]
        if shape.kind == "square":
            draw.rectangle(corners, fill=fill)
        elif shape.kind == "circle":
            draw.ellipse(corners, fill=fill)
        else:
            draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)], fill=fill)
    return image


def caption(shapes: list[Shape]) -> str:
    """The exact caption, shapes left to right: ``"a red square and a blue circle"``."""
    return " and ".join(f"a {s.color} {s.kind}" for s in shapes)


def questions(shapes: list[Shape], rng: np.random.Generator) -> list[tuple[str, str]]:
    """(question, answer) pairs that the scene answers exactly: colour, count and existence questions."""
    pairs = [("how many shapes are there?", NUMBERS[len(shapes)])]
    kinds = [s.kind for s in shapes]
    for shape in shapes:
        if kinds.count(shape.kind) == 1:
            pairs.append((f"what color is the {shape.kind}?", shape.color))
    present = sorted(set(kinds))
    absent = [k for k in KINDS if k not in present]
    asked = present[int(rng.integers(len(present)))]
    pairs.append((f"is there a {asked}?", "yes"))
    if absent:
        pairs.append((f"is there a {absent[int(rng.integers(len(absent)))]}?", "no"))
    return pairs


def _rows(index: int, shapes: list[Shape], image_b64: str, rng: np.random.Generator) -> dict[str, list[str]]:
    """The TSV lines (without newlines) that one image contributes to each task."""
    vqa = [
        f"{index * 10 + k}\t{index}\t{q}\t1.0|!+{a}\t\t{image_b64}" for k, (q, a) in enumerate(questions(shapes, rng))
    ]
    refs = [
        f"{index * 10 + k}\t{index}\t{s.name}\t{','.join(map(str, s.box))}\t{image_b64}" for k, s in enumerate(shapes)
    ]
    return {"caption": [f"{index}\t{index}\t{caption(shapes)}\t\t{image_b64}"], "vqa_gen": vqa, "refcoco": refs}


def write_split(out: Path, split: str, count: int, start: int, seed: int, size: int) -> dict[str, Path]:
    """Write ``{task}_{split}.tsv`` for all three tasks from ``count`` scenes; returns the paths."""
    rng = np.random.default_rng(seed)
    lines: dict[str, list[str]] = {task: [] for task in SELECTED_COLS}
    for index in range(start, start + count):
        shapes = random_scene(rng, size)
        for task, rows in _rows(index, shapes, encode_image_base64(draw_scene(shapes, size)), rng).items():
            lines[task].extend(rows)
    paths = {}
    for task, rows in lines.items():
        paths[task] = out / f"{task}_{split}.tsv"
        paths[task].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return paths


def all_answers() -> list[str]:
    """Every answer the generator can produce, in a fixed order (the VQA candidate list)."""
    return ["yes", "no", *NUMBERS.values(), *COLORS]


def all_texts() -> list[str]:
    """Every caption word, question and referring expression pattern (training text for a tokenizer)."""
    texts = [f"a {c} {k} and a {c2} {k2}" for c in COLORS for k in KINDS for c2 in COLORS for k2 in KINDS]
    texts += [f"what color is the {k}? is there a {k}? the {c} {k}" for k in KINDS for c in COLORS]
    texts += ["how many shapes are there?", " ".join(all_answers())]
    return texts


def write_dataset(out: str | Path, n_train: int = 400, n_test: int = 64, seed: int = 0, size: int = 64) -> dict:
    """Write train/test TSVs, ``ans2label.pkl`` and ``texts.txt`` into ``out``; returns their paths by name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = write_split(out, "train", n_train, 0, seed, size)
    test = write_split(out, "test", n_test, n_train, seed + 1, size)
    ans2label = out / "ans2label.pkl"
    with open(ans2label, "wb") as f:
        pickle.dump({a: i for i, a in enumerate(all_answers())}, f)
    texts = out / "texts.txt"
    texts.write_text("\n".join(all_texts()) + "\n", encoding="utf-8")
    return {"train": train, "test": test, "ans2label": ans2label, "texts": texts}


def read_tsv(path: str | Path) -> list[list[str]]:
    """The rows of a TSV written here, split into columns."""
    return [line.split("\t") for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
