"""Tests for data/convert.py and data/converters: every format end to end on tiny generated fixtures."""

import base64
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.convert import main
from data.converters import ConvertError, vqa_soft_scores, write_tsv
from data.converters.coco import format_box, load_refs
from data.converters.core import Entry, Malformed, image_base64
from data.images import decode_base64_image
from data.tsv import TSVFile


def _make_image(path: Path, seed: int, fmt: str = "PNG") -> np.ndarray:
    """Write a small random RGB image (as ``fmt``) and return its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(6 + seed, 5 + seed, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


def _rows(path: Path) -> list[list[str]]:
    tsv = TSVFile(path)
    rows = [tsv[i] for i in range(len(tsv))]
    tsv.close()
    return rows


def _pixels(b64: str) -> np.ndarray:
    return np.asarray(decode_base64_image(b64))


def _run(capsys, *argv: str) -> str:
    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out.strip()


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ---- COCO captions ----------------------------------------------------------------------------------------


@pytest.fixture
def coco(tmp_path):
    images = tmp_path / "images"
    pixels = {i: _make_image(images / f"COCO_val2014_{i:012d}.jpg", i) for i in (1, 2, 3)}
    (images / "COCO_val2014_000000000003.jpg").unlink()  # image 3 is missing
    data = {
        "images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in (1, 2, 3)],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "A cat\ton a mat.\n"},
            {"id": 11, "image_id": 1, "caption": "A small cat."},
            {"id": 12, "image_id": 2, "caption": "Two dogs."},
            {"id": 13, "image_id": 3, "caption": "Missing."},
            {"id": 14, "caption": "no image id"},
        ],
    }
    return images, _write_json(tmp_path / "captions.json", data), pixels


def test_coco_captions_train(tmp_path, capsys, coco):
    images, annotations, pixels = coco
    out = tmp_path / "caption.tsv"
    line = _run(capsys, "coco-captions", "--annotations", annotations, "--images", images, "--out", out)
    assert line == f"wrote 3 rows to {out} (skipped 2: malformed entry 1, missing image 1)"
    rows = _rows(out)
    assert [r[:4] for r in rows] == [["10", "1", "A cat on a mat.", ""], ["11", "1", "A small cat.", ""],
                                     ["12", "2", "Two dogs.", ""]]  # fmt: skip
    assert all(len(r) == 5 for r in rows)
    for row in rows:
        np.testing.assert_array_equal(_pixels(row[4]), pixels[int(row[1])])


def test_coco_captions_eval_joins_refs(tmp_path, capsys, coco):
    images, annotations, pixels = coco
    out = tmp_path / "caption_val.tsv"
    line = _run(capsys, "coco-captions", "--annotations", annotations, "--images", images, "--out", out, "--eval")
    assert line.endswith("(skipped 2: malformed entry 1, missing image 1)")
    rows = _rows(out)
    assert [r[:4] for r in rows] == [["1", "1", "A cat on a mat.&&A small cat.", ""], ["2", "2", "Two dogs.", ""]]
    np.testing.assert_array_equal(_pixels(rows[1][4]), pixels[2])


def test_strict_fails_on_missing_image(tmp_path, capsys, coco):
    images, annotations, _ = coco
    out = tmp_path / "caption.tsv"
    argv = ["coco-captions", "--annotations", annotations, "--images", images, "--out", out, "--strict"]
    assert main([str(a) for a in argv]) == 1
    assert "no image file" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("caption.tsv.tmp").exists()
    # a malformed entry is reported with its index
    data = {"images": [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg"}], "annotations": []}
    data["annotations"] = [{"id": 1, "image_id": 1, "caption": "ok"}, {"id": 2, "caption": "no image id"}]
    argv[2] = _write_json(tmp_path / "bad.json", data)
    assert main([str(a) for a in argv]) == 1
    assert "annotations[1]: missing key 'image_id'" in capsys.readouterr().err


# ---- VQA ----------------------------------------------------------------------------------------------------


def test_vqa_soft_scores_follow_the_official_metric():
    answers = ["yes"] * 4 + ["no"] * 3 + ["maybe"] * 2 + ["nope"]
    assert vqa_soft_scores(answers) == {"yes": 1.0, "no": 0.9, "maybe": 0.6, "nope": 0.3}
    assert vqa_soft_scores(["2"] * 10) == {"2": 1.0}


def test_vqa(tmp_path, capsys):
    images = tmp_path / "val2014"
    pixels = {i: _make_image(images / f"COCO_val2014_{i:012d}.jpg", i) for i in (1, 2)}
    questions = {
        "data_subtype": "val2014",
        "questions": [
            {"question_id": 100, "image_id": 1, "question": "What color?"},
            {"question_id": 200, "image_id": 2, "question": "How many?"},
            {"question_id": 300, "image_id": 9, "question": "Where?"},
        ],
    }
    human = {100: ["Red"] * 3 + ["blue"] * 7, 200: ["2"] * 2 + ["3"] * 8, 300: ["here"] * 10}
    annotations = {
        "annotations": [{"question_id": q, "image_id": 0, "answers": [{"answer": a} for a in answers]}
                        for q, answers in human.items()]
    }  # fmt: skip
    out = tmp_path / "vqa.tsv"
    argv = ["vqa", "--questions", _write_json(tmp_path / "q.json", questions), "--images", images, "--out", out]
    line = _run(capsys, *argv, "--annotations", _write_json(tmp_path / "a.json", annotations))
    assert line == f"wrote 2 rows to {out} (skipped 1: missing image 1)"
    rows = _rows(out)
    assert [r[:5] for r in rows] == [
        ["100", "1", "What color?", "1.0|!+blue&&0.9|!+red", ""],
        ["200", "2", "How many?", "1.0|!+3&&0.6|!+2", ""],
    ]
    for row in rows:
        np.testing.assert_array_equal(_pixels(row[5]), pixels[int(row[1])])
    # without annotations (test splits) the answers column is empty
    _run(capsys, *argv)
    assert [r[3] for r in _rows(out)] == ["", ""]


# ---- RefCOCO ------------------------------------------------------------------------------------------------


def _refs() -> list[dict]:
    sentences = [{"sent_id": 7, "sent": "left man"}, {"sent_id": 8, "sent": "man on the left"}]
    return [
        {"ref_id": 0, "image_id": 1, "ann_id": 50, "split": "val", "sentences": sentences},
        {"ref_id": 1, "image_id": 2, "ann_id": 51, "split": "train", "sentences": [{"sent_id": 9, "sent": "x"}]},
        {"ref_id": 2, "image_id": 2, "ann_id": 51, "split": "val", "sentences": [{"sent_id": 10, "sent": "dog"}]},
        {"ref_id": 3, "image_id": 4, "ann_id": 52, "split": "val", "sentences": [{"sent_id": 11, "sent": "gone"}]},
        {"ref_id": 4, "image_id": 2, "ann_id": 999, "split": "val", "sentences": []},
    ]


@pytest.mark.parametrize("refs_format", ["pickle", "json"])
def test_refcoco(tmp_path, capsys, refs_format):
    images = tmp_path / "train2014"
    pixels = {i: _make_image(images / f"COCO_train2014_{i:012d}.jpg", i) for i in (1, 2)}
    instances = {
        "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"} for i in (1, 2, 4)],
        "annotations": [
            {"id": 50, "image_id": 1, "bbox": [1.5, 2.25, 3.0, 4.1]},
            {"id": 51, "image_id": 2, "bbox": [0, 0, 5, 6]},
            {"id": 52, "image_id": 4, "bbox": [0, 0, 1, 1]},
        ],
    }
    if refs_format == "pickle":
        refs = tmp_path / "refs(unc).p"
        refs.write_bytes(pickle.dumps(_refs(), protocol=2))
    else:
        refs = _write_json(tmp_path / "refs.json", _refs())
    out = tmp_path / "refcoco_val.tsv"
    argv = ["refcoco", "--refs", refs, "--instances", _write_json(tmp_path / "inst.json", instances)]
    line = _run(capsys, *argv, "--images", images, "--split", "val", "--out", out)
    assert line == f"wrote 3 rows to {out} (skipped 2: malformed entry 1, missing image 1)"
    rows = _rows(out)
    assert [r[:4] for r in rows] == [
        ["7", "1", "left man", "1.5,2.25,4.5,6.35"],
        ["8", "1", "man on the left", "1.5,2.25,4.5,6.35"],
        ["10", "2", "dog", "0.0,0.0,5.0,6.0"],
    ]
    for row in rows:
        np.testing.assert_array_equal(_pixels(row[4]), pixels[int(row[1])])


def test_refs_unpickler_refuses_code(tmp_path):
    evil = tmp_path / "refs.p"
    evil.write_bytes(pickle.dumps([{"f": Path("x")}]))  # references a class
    with pytest.raises(ConvertError, match="refusing"):
        load_refs(evil)


def test_format_box():
    assert format_box([10, 20, 30, 40]) == "10.0,20.0,40.0,60.0"
    with pytest.raises(ValueError):
        format_box([0, 0, -1, 2])


# ---- SNLI-VE ------------------------------------------------------------------------------------------------


def test_snli_ve(tmp_path, capsys):
    images = tmp_path / "flickr"
    pixels = {i: _make_image(images / f"{i}.jpg", i) for i in (1, 2)}
    items = [
        {"Flickr30K_ID": "1", "sentence1": "A man.", "sentence2": "A person.", "gold_label": "entailment",
         "pairID": "p1"},
        {"Flickr30K_ID": "2", "sentence1": "Dogs.", "sentence2": "Cats.", "gold_label": "contradiction"},
        {"Flickr30K_ID": "3", "sentence1": "Gone.", "sentence2": "Gone.", "gold_label": "neutral"},
        {"Flickr30K_ID": "2", "sentence1": "x", "sentence2": "y", "gold_label": "-"},
    ]  # fmt: skip
    jsonl = tmp_path / "snli_ve_dev.jsonl"
    jsonl.write_text("\n".join(json.dumps(item) for item in items) + "\n", encoding="utf-8")
    out = tmp_path / "snli_ve.tsv"
    line = _run(capsys, "snli-ve", "--jsonl", jsonl, "--images", images, "--out", out)
    assert line == f"wrote 2 rows to {out} (skipped 2: malformed entry 1, missing image 1)"
    rows = _rows(out)
    assert [r[:2] + r[3:] for r in rows] == [
        ["p1", "1", "A person.", "A man.", "entailment"],
        ["1", "2", "Cats.", "Dogs.", "contradiction"],
    ]
    for row in rows:
        np.testing.assert_array_equal(_pixels(row[2]), pixels[int(row[1])])


# ---- image folder -------------------------------------------------------------------------------------------


def test_folder_caption_csv(tmp_path, capsys):
    images = tmp_path / "imgs"
    a = _make_image(images / "a.png", 1)
    b = _make_image(images / "b.bmp", 2, fmt="BMP")  # re-encoded as PNG, still lossless
    labels = tmp_path / "labels.csv"
    labels.write_text('file,caption\na.png,"a red, square thing"\nb.bmp,blue\nmissing.png,none\n', encoding="utf-8")
    out = tmp_path / "folder.tsv"
    line = _run(capsys, "folder", "--images", images, "--labels", labels, "--task", "caption", "--out", out)
    assert line == f"wrote 2 rows to {out} (skipped 1: missing image 1)"
    rows = _rows(out)
    assert [r[:4] for r in rows] == [["0", "a", "a red, square thing", ""], ["1", "b", "blue", ""]]
    np.testing.assert_array_equal(_pixels(rows[0][4]), a)
    np.testing.assert_array_equal(_pixels(rows[1][4]), b)


def test_folder_image_classify_jsonl(tmp_path, capsys):
    images = tmp_path / "imgs"
    pixels = [_make_image(images / f"{i}.png", i) for i in range(3)]
    records = [{"file": "0.png", "label": "zebra"}, {"file": "1.png", "label": "ant"}, {"file": "2.png", "label": 2},
               {"file": "9.png", "label": "ant"}, {"file": "2.png"}]  # fmt: skip
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    out = tmp_path / "cls.tsv"
    argv = ["folder", "--images", images, "--labels", labels, "--task", "image_classify", "--out", out]
    line = _run(capsys, *argv)
    assert line == f"wrote 3 rows to {out} (skipped 2: malformed entry 1, missing image 1)"
    rows = _rows(out)
    assert [r[1:] for r in rows] == [["2", "zebra"], ["1", "ant"], ["2", "zebra"]]
    for row, expected in zip(rows, pixels, strict=True):
        np.testing.assert_array_equal(_pixels(row[0]), expected)
    names = tmp_path / "synset.txt"
    names.write_text("ant\nbee\nzebra\n", encoding="utf-8")
    _run(capsys, *argv, "--label-names", names)
    assert [r[1:] for r in _rows(out)] == [["3", "zebra"], ["1", "ant"], ["2", "bee"]]


# ---- the writer ---------------------------------------------------------------------------------------------


def test_writer_keeps_jpeg_bytes_and_counts_unreadable(tmp_path):
    jpeg = tmp_path / "x.jpg"
    _make_image(jpeg, 1, fmt="JPEG")
    broken = tmp_path / "broken.gif"
    broken.write_bytes(b"GIF89a not really")
    entries = [
        Entry("e0", jpeg, ("0", None)),
        Entry("e1", broken, ("1", None)),
        Malformed("items[2]", "missing key 'x'"),
    ]
    summary = write_tsv(entries, tmp_path / "out.tsv")
    expected = f"wrote 1 rows to {tmp_path / 'out.tsv'} (skipped 2: malformed entry 1, unreadable image 1)"
    assert summary.line() == expected
    assert _rows(tmp_path / "out.tsv") == [["0", image_base64(jpeg)]]
    assert base64.urlsafe_b64decode(image_base64(jpeg)) == jpeg.read_bytes()


def test_unreadable_annotation_file_is_an_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    argv = ["coco-captions", "--annotations", bad, "--images", tmp_path, "--out", tmp_path / "o.tsv"]
    assert main([str(a) for a in argv]) == 1
    assert "cannot read" in capsys.readouterr().err
