"""The embedded demo: the shapes-world generator's annotations match its images, and a quick demo run works."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import demo
from data.images import decode_base64_image
from data.shapes import (
    COLORS,
    KINDS,
    all_answers,
    caption,
    draw_scene,
    questions,
    random_scene,
    read_tsv,
    write_dataset,
)


def _scenes(count: int = 50, seed: int = 3) -> list:
    rng = np.random.default_rng(seed)
    return [random_scene(rng, 64) for _ in range(count)]


def test_box_centre_has_the_shape_colour() -> None:
    for shapes in _scenes():
        image = draw_scene(shapes, 64)
        assert 1 <= len(shapes) <= 2
        for shape in shapes:
            x0, y0, x1, y1 = shape.box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            assert image.getpixel(shape.center) == COLORS[shape.color]


def test_caption_and_answers_match_the_scene() -> None:
    rng = np.random.default_rng(0)
    for shapes in _scenes():
        text = caption(shapes)
        assert text.count(" and ") == len(shapes) - 1
        for shape in shapes:
            assert f"a {shape.color} {shape.kind}" in text
        answers = dict(questions(shapes, rng))
        assert answers["how many shapes are there?"] == {1: "one", 2: "two"}[len(shapes)]
        for kind in KINDS:
            asked = answers.get(f"is there a {kind}?")
            assert asked in (None, "yes" if kind in [s.kind for s in shapes] else "no")
            if f"what color is the {kind}?" in answers:
                assert answers[f"what color is the {kind}?"] == next(s.color for s in shapes if s.kind == kind)
        assert set(answers.values()) <= set(all_answers())


def test_write_dataset_tsvs(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path, n_train=6, n_test=3, seed=0)
    for split in ("train", "test"):
        caps, vqa, refs = (read_tsv(paths[split][t]) for t in ("caption", "vqa_gen", "refcoco"))
        assert len(caps) == (6 if split == "train" else 3) and all(len(r) == 5 for r in caps)
        assert all(len(r) == 6 and r[3].startswith("1.0|!+") for r in vqa)
        for row in refs:
            image = decode_base64_image(row[4])
            x0, y0, x1, y1 = (int(v) for v in row[3].split(","))
            color = row[2].split()[1]
            assert image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == COLORS[color]
    with open(paths["ans2label"], "rb") as f:
        assert list(pickle.load(f)) == all_answers()


def test_quick_demo(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert demo.main(["--out", str(tmp_path), "--quick"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"caption", "vqa_gen", "refcoco"}
    for task, values in metrics.items():
        assert values["before"] >= 0.0 and values["after"] >= 0.0, task
        assert values["updates"] == 2
        assert (tmp_path / "checkpoints" / task / "checkpoint_last.pt").is_file()
    assert (tmp_path / "data" / "tokenizer.json").is_file()
    with Image.open(tmp_path / "grounding.png") as image:
        image.verify()
    assert any((tmp_path / "tensorboard").rglob("*tfevents*"))
    out = capsys.readouterr().out
    assert "Acc@0.5" in out and "CIDEr" in out


def test_photo_rows_have_their_boxes_inside_and_licences(tmp_path: Path) -> None:
    from data import photos

    rows = photos.photo_rows(100, size=96, copies={"caption": 3, "vqa_gen": 1, "refcoco": 2})
    assert [len(rows[t]) for t in ("caption", "vqa_gen", "refcoco")] == [18, 6, 12]
    assert len({r.split("\t")[0] for r in rows["caption"]}) == 18
    for row in rows["refcoco"][::2]:
        image = decode_base64_image(row.split("\t")[4])
        x0, y0, x1, y1 = (int(v) for v in row.split("\t")[3].split(","))
        assert max(image.size) == 96 and 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
    text = photos.write_licenses(tmp_path).read_text()
    assert all(f"{p.name}: " in text for p in photos.PHOTOS) and "CC0" in text
