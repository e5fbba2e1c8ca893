"""predict.py and OFAPredictor on tiny checkpoints trained for a step (every CLI task: valid JSONL, boxes inside
the image, --draw PNGs, API == CLI), a grounding checkpoint trained until it finds its box, and one-line errors
with exit code 2."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import predict
import train
from models.predictor import OFAPredictor
from tests.conftest import BPE_DIR, random_image_b64, write_task_tsv
from tests.tasks.test_gigaword import _write_tsv as write_gigaword_tsv
from tests.tasks.test_image_classify import CLASSES
from tests.tasks.test_image_classify import write_tsv as write_imagenet_tsv

REPO = Path(__file__).resolve().parents[1]
TRAIN_FLAGS = {
    "caption": [],
    "vqa_gen": ["--prompt-type", "prev_output", "--ans2label-dict", '{"yes": 0, "no": 1, "red dog": 2}'],
    "refcoco": [],
    "image_classify": ["--ans2label-dict", json.dumps(CLASSES)],
    "gigaword": ["--max-src-length", "32", "--max-tgt-length", "8"],
}
SIZES = [(48, 40), (20, 30)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    if not BPE_DIR.exists():
        pytest.skip(f"{BPE_DIR} is absent")
    root = tmp_path_factory.mktemp("predict_ckpts")
    paths = {}
    for task, flags in TRAIN_FLAGS.items():
        if task == "image_classify":
            tsv, cols = write_imagenet_tsv(root / f"{task}.tsv", 4), "0,2"
        elif task == "gigaword":
            tsv, cols = write_gigaword_tsv(root / f"{task}.tsv", 4, seed=0), "0,1"
        else:
            tsv, cols = write_task_tsv(task, root / f"{task}.tsv", 4, seed=0)
        save = root / task
        argv = [f"{tsv},{tsv}", "--task", task, "--arch", "ofa_test", "--bpe-dir", str(BPE_DIR), "--selected-cols",
                cols, "--patch-image-size", "32", "--batch-size", "4", "--max-update", "1", "--save-dir", str(save),
                *flags]  # fmt: skip
        assert train.main(argv) == 0
        paths[task] = save / "checkpoint_last.pt"
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("predict_images")
    rng = np.random.RandomState(0)
    paths = []
    for i, (w, h) in enumerate(SIZES):
        path = root / f"img{i}.png"
        Image.fromarray(rng.randint(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def run_cli(capsys, *argv: str) -> tuple[int, list[dict], str]:
    """predict.main in process: (exit code, stdout JSON lines, stderr)."""
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_caption_cli_folder(checkpoints, images, capsys):
    code, rows, _ = run_cli(capsys, "--path", checkpoints["caption"], "--task", "caption", images[0].parent,
                            "--batch-size", "1", "--beam", "2")  # fmt: skip
    assert code == 0 and len(rows) == 2
    assert [r["image"] for r in rows] == [str(p) for p in images]
    assert all(r["task"] == "caption" and isinstance(r["caption"], str) for r in rows)


def test_vqa_cli_requests_file(checkpoints, images, tmp_path, capsys):
    requests = tmp_path / "req.jsonl"
    requests.write_text("".join(json.dumps({"image": str(p), "question": "what is it"}) + "\n" for p in images))
    out = tmp_path / "out.jsonl"
    code, rows, _ = run_cli(capsys, "--path", checkpoints["vqa_gen"], "--task", "vqa", "--requests", requests,
                            "--output", out)  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 0 and len(rows) == 2
    assert all(r["answer"] in {"yes", "no", "red dog"} and r["question"] == "what is it" for r in rows)


def test_vqa_free_form_on_caption_checkpoint(checkpoints, images):
    predictor = OFAPredictor.from_pretrained(checkpoints["caption"])
    answers = predictor.vqa(images, ["what is it?", "is it red"], beam=2)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_ground_cli_boxes_and_draw(checkpoints, images, tmp_path, capsys):
    draw = tmp_path / "box.png"
    pattern = str(images[0].parent / "*.png")
    code, rows, _ = run_cli(capsys, "--path", checkpoints["refcoco"], "--task", "ground", pattern,
                            "--text", "a red dog", "--draw", draw)  # fmt: skip
    assert code == 0 and len(rows) == 2
    for row, (w, h), i in zip(rows, SIZES, range(2), strict=True):
        x0, y0, x1, y1 = row["box"]
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h and isinstance(row["score"], float)
        with Image.open(tmp_path / f"box_{i}.png") as drawn:
            assert drawn.format == "PNG" and drawn.size == (w, h)


def test_classify_cli(checkpoints, images, capsys):
    code, rows, _ = run_cli(capsys, "--path", checkpoints["image_classify"], "--task", "classify", *images)
    assert code == 0 and [r["image"] for r in rows] == [str(p) for p in images]
    assert all(r["task"] == "classify" and r["answer"] in CLASSES for r in rows)


def test_summarize_cli(checkpoints, tmp_path, capsys):
    texts = ["the cat sat on the red mat today", "a dog ran across the green park"]
    requests = tmp_path / "req.jsonl"
    requests.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    code, rows, _ = run_cli(capsys, "--path", checkpoints["gigaword"], "--task", "summarize", "--requests", requests,
                            "--beam", "2")  # fmt: skip
    assert code == 0 and [r["text"] for r in rows] == texts
    assert all(r["task"] == "summarize" and isinstance(r["summary"], str) for r in rows)


def test_trained_grounding_checkpoint_finds_its_box(tmp_path, capsys):
    """A refcoco model trained on one 40x30 image until it knows the box: predict.py returns that box in pixels."""
    if not BPE_DIR.exists():
        pytest.skip(f"{BPE_DIR} is absent")
    image_b64, truth = random_image_b64(np.random.RandomState(5), 30, 40), (8, 6, 28, 21)
    tsv = tmp_path / "one.tsv"
    tsv.write_text("".join(f"{i}\t{i}\tthe thing\t{','.join(map(str, truth))}\t{image_b64}\n" for i in range(4)))
    argv = [f"{tsv},{tsv}", "--task", "refcoco", "--arch", "ofa_test", "--bpe-dir", str(BPE_DIR), "--selected-cols",
            "0,4,2,3", "--patch-image-size", "32", "--max-image-size", "32", "--batch-size", "4", "--max-update", "60",
            "--lr", "2e-3", "--warmup-ratio", "0.1", "--num-bins", "32", "--dropout", "0", "--disable-validation",
            "--seed", "1", "--save-dir", str(tmp_path / "ckpt")]  # fmt: skip
    assert train.main(argv) == 0
    image = tmp_path / "one.png"
    Image.open(io.BytesIO(base64.urlsafe_b64decode(image_b64))).save(image)
    code, rows, _ = run_cli(capsys, "--path", tmp_path / "ckpt" / "checkpoint_last.pt", "--task", "ground", image,
                            "--text", "the thing", "--draw", tmp_path / "drawn.png")  # fmt: skip
    assert code == 0 and len(rows) == 1
    box = rows[0]["box"]
    assert iou(box, truth) > 0.5, (box, truth)
    with Image.open(tmp_path / "drawn.png") as drawn:
        assert drawn.size == (40, 30)


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_api_matches_cli(checkpoints, images, capsys):
    predictor = OFAPredictor.from_pretrained(checkpoints["refcoco"], bpe_dir=str(BPE_DIR))
    api = predictor.ground([Image.open(images[1])], ["the blue sky"])[0]
    _, rows, _ = run_cli(
        capsys, "--path", checkpoints["refcoco"], "--task", "ground", images[1], "--text", "the blue sky"
    )
    assert rows[0]["box"] == api["box"] and rows[0]["score"] == pytest.approx(api["score"])
    caption = OFAPredictor.from_pretrained(checkpoints["caption"]).caption([images[0]])
    _, rows, _ = run_cli(capsys, "--path", checkpoints["caption"], "--task", "caption", images[0])
    assert rows[0]["caption"] == caption[0]


def error_case(argv: list[str]) -> tuple[int, list[str]]:
    """predict.py as a real process: (exit code, stderr lines); nothing may reach stdout."""
    result = subprocess.run([sys.executable, "predict.py", *map(str, argv)], cwd=REPO, capture_output=True, text=True)
    assert result.stdout == ""
    return result.returncode, result.stderr.splitlines()


def test_error_missing_image(checkpoints, tmp_path):
    missing = tmp_path / "nope.jpg"
    code, err = error_case(["--path", checkpoints["caption"], "--task", "caption", missing])
    assert code == 2 and len(err) == 1 and str(missing) in err[0]


def test_error_unreadable_image(checkpoints, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("this is not an image")
    code, err = error_case(["--path", checkpoints["caption"], "--task", "caption", bad])
    assert code == 2 and len(err) == 1 and str(bad) in err[0]


def test_error_wrong_task(checkpoints, images):
    code, err = error_case(["--path", checkpoints["caption"], "--task", "captioning", images[0]])
    assert code == 2 and len(err) == 1 and "captioning" in err[0]
    assert all(name in err[0] for name in predict.CLI_TASKS)


def test_error_missing_question(checkpoints, images):
    code, err = error_case(["--path", checkpoints["vqa_gen"], "--task", "vqa", images[0]])
    assert code == 2 and len(err) == 1 and "--question" in err[0]
