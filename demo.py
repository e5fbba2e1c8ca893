"""The embedded demo: train tiny OFA models from scratch on a generated shapes world and watch them learn.

``python demo.py [--out demo_output] [--quick]`` runs offline on a CPU:

1. writes the shapes-world TSVs (caption, vqa_gen, refcoco), adds six real photographs from scikit-image's
   bundled sample images with hand-written annotations (``data/photos.py``; licences in
   ``OUT/data/PHOTO_LICENSES.txt``) and trains a small byte-level BPE tokenizer on their texts (no GPT-2 BPE
   files needed);
2. for each task evaluates a freshly initialised ``ofa_test`` model on the test split (``evaluate.main``),
   trains it from scratch with ``train.main`` (progress bar, TensorBoard logs in ``OUT/tensorboard``) and
   evaluates it again (CIDEr, VQA accuracy, Acc@0.5);
3. prints a before/after table with sample predictions, writes ``OUT/metrics.json`` and draws predicted (red)
   and true (green) boxes on test images into ``OUT/grounding.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import evaluate
import train
from data import photos
from data.images import decode_base64_image
from data.shapes import SELECTED_COLS, all_answers, read_tsv, write_dataset
from data.tokenizer import train_tokenizer_json
from models import build_model, save_pretrained
from tasks import TASKS

METRIC = {"caption": ("cider", "CIDEr"), "vqa_gen": ("vqa_score", "VQA accuracy"), "refcoco": ("score", "Acc@0.5")}


@dataclasses.dataclass
class Settings:
    """Sizes and hyper-parameters of one demo run."""

    n_train: int = 400
    n_test: int = 48
    updates: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"caption": 300, "vqa_gen": 400, "refcoco": 900}
    )
    batch_size: int = 16
    lr: float = 1e-3
    vocab_size: int = 500  # large enough for (nearly) every word of the corpus to be one token
    eval_batch_size: int = 16
    # each real photo appears this many times in a task's training split (once in test); captions need the most
    photo_copies: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"caption": 32, "vqa_gen": 8, "refcoco": 8}
    )
    photo_size: int = 96  # longer side of the stored photos


QUICK = Settings(n_train=4, n_test=2, updates={"caption": 2, "vqa_gen": 2, "refcoco": 2}, batch_size=4,
                 photo_copies={"caption": 1, "vqa_gen": 1, "refcoco": 1})  # fmt: skip
PHOTO_IDS = {"train": 100_000, "test": 200_000}  # first row id of the photos in each split


def add_photos(paths: dict, cfg: Settings) -> None:
    """Append the real photographs to every task's train/test TSV, their answers to ``ans2label.pkl`` and their
    texts to the tokenizer corpus, and record their licences next to the data."""
    for split, first in PHOTO_IDS.items():
        rows = photos.photo_rows(first, cfg.photo_size, cfg.photo_copies if split == "train" else 1)
        for task, lines in rows.items():
            with open(paths[split][task], "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
    answers = all_answers() + [a for a in dict.fromkeys(p.answer for p in photos.PHOTOS) if a not in all_answers()]
    with open(paths["ans2label"], "wb") as f:
        pickle.dump({a: i for i, a in enumerate(answers)}, f)
    with open(paths["texts"], "a", encoding="utf-8") as f:
        f.write("\n".join(photos.all_texts()) + "\n")
    paths["licenses"] = photos.write_licenses(paths["texts"].parent)


def build_data(out: Path, cfg: Settings, seed: int) -> dict:
    """Write the shapes world plus the real photographs and train the tokenizer; returns the dataset paths."""
    paths = write_dataset(out / "data", n_train=cfg.n_train, n_test=cfg.n_test, seed=seed, size=64)
    add_photos(paths, cfg)
    paths["tokenizer"] = train_tokenizer_json([paths["texts"]], out / "data" / "tokenizer.json", cfg.vocab_size)
    return paths


def task_flags(task: str, paths: dict) -> list[str]:
    """Task settings shared by training and the fresh checkpoint (saved in the checkpoint's task config)."""
    flags = [
        f"{paths['train'][task]},{paths['test'][task]}", "--task", task, "--arch", "ofa_test",
        "--selected-cols", SELECTED_COLS[task], "--tokenizer-json", str(paths["tokenizer"]),
        "--patch-image-size", "64", "--code-dict-size", "0", "--num-bins", "64",
    ]  # fmt: skip
    if task == "vqa_gen":
        flags += ["--prompt-type", "prev_output", "--ans2label-file", str(paths["ans2label"])]
    if task == "refcoco":
        flags += ["--max-image-size", "64"]
    return flags


def train_argv(task: str, paths: dict, out: Path, cfg: Settings, seed: int) -> list[str]:
    """The full ``train.py`` command line for one task."""
    return task_flags(task, paths) + [
        "--max-update", str(cfg.updates[task]), "--total-num-update", str(cfg.updates[task]),
        "--batch-size", str(cfg.batch_size), "--lr", str(cfg.lr),
        "--warmup-ratio", "0.05", "--weight-decay", "0.01", "--clip-norm", "1.0", "--dropout", "0.0",
        "--label-smoothing", "0.0", "--seed", str(seed), "--cpu", "--disable-validation",
        "--no-epoch-checkpoints", "--save-dir", str(out / "checkpoints" / task), "--log-interval", "50",
        "--tensorboard-logdir", str(out / "tensorboard" / task),
    ]  # fmt: skip


def fresh_checkpoint(argv: list[str], path: Path) -> Path:
    """Save the model train.py would start from (same preset, vocabulary and seed) as a checkpoint."""
    cfg = train.parse_args(argv)
    train.seed_everything(cfg.common.seed)
    task = TASKS.build(cfg.task_name, cfg.task)
    model = build_model(cfg.model.replace(vocab_size=len(task.tokenizer), patch_image_size=cfg.task.patch_image_size))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_pretrained(model, path, task_args={"_name": cfg.task_name, **dataclasses.asdict(cfg.task)})
    return path


def run_eval(ckpt: Path, test_tsv: Path, results: Path, cfg: Settings) -> tuple[dict, list[dict]]:
    """``evaluate.main`` on the test split; returns (metrics, prediction records)."""
    argv = [str(test_tsv), "--path", str(ckpt), "--gen-subset", "test", "--results-path", str(results), "--cpu",
            "--batch-size", str(cfg.eval_batch_size), "--beam", "1"]  # fmt: skip
    if "caption" in test_tsv.name:
        argv += ["--max-len-b", "16"]
    evaluate.main(argv)
    metrics = json.loads((results / "test_metrics.json").read_text())
    return metrics, json.loads((results / "test_predict.json").read_text())


def run_task(task: str, paths: dict, out: Path, cfg: Settings, seed: int) -> dict:
    """Evaluate fresh, train, evaluate again; returns before/after metrics, predictions and timing."""
    argv = train_argv(task, paths, out, cfg, seed)
    test_tsv = paths["test"][task]
    fresh = fresh_checkpoint(argv, out / "checkpoints" / task / "fresh.pt")
    before, _ = run_eval(fresh, test_tsv, out / "results" / task / "before", cfg)
    start = time.time()
    train.main(argv)
    seconds = time.time() - start
    after, predictions = run_eval(out / "checkpoints" / task / "checkpoint_last.pt", test_tsv,
                                  out / "results" / task / "after", cfg)  # fmt: skip
    key = METRIC[task][0]
    return {"before": before[key], "after": after[key], "train_seconds": round(seconds, 1),
            "updates": cfg.updates[task], "predictions": predictions}  # fmt: skip


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``x0,y0,x1,y1`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def majority_rate(test_tsv: Path) -> float:
    """The VQA accuracy of always answering the most common test answer (the baseline to beat)."""
    answers = [row[3].split("|!+")[1] for row in read_tsv(test_tsv)]
    return max(answers.count(a) for a in set(answers)) / len(answers)


def _pred_id(task: str, pred: dict) -> str:
    return str(pred[{"caption": "image_id", "vqa_gen": "question_id", "refcoco": "uniq_id"}[task]])


def _is_photo(row_id: str) -> bool:
    return int(row_id) >= PHOTO_IDS["test"]


def pick_predictions(task: str, result: dict, shapes: int = 3) -> list[dict]:
    """The first ``shapes`` shapes-world predictions followed by every photo's prediction."""
    preds = result["predictions"]
    return [p for p in preds if not _is_photo(_pred_id(task, p))][:shapes] + [
        p for p in preds if _is_photo(_pred_id(task, p))
    ]


def sample_line(task: str, pred: dict, row: list[str]) -> str:
    """One readable "input -> prediction (truth)" line."""
    if task == "caption":
        return f"image {row[0]}: {pred['caption']!r}  (truth: {row[2]!r})"
    if task == "vqa_gen":
        return f"{row[2]} -> {pred['answer']!r}  (truth: {row[3].split('|!+')[1]!r})"
    box = ",".join(f"{v:.0f}" for v in pred["box"])
    truth = [float(v) for v in row[3].split(",")]
    return f"{row[2]!r} -> box {box}  (truth: {row[3]}, IoU {iou(pred['box'], truth):.2f})"


def samples(task: str, result: dict, test_tsv: Path, count: int = 3) -> list[str]:
    """Readable prediction lines: ``count`` shapes-world images, then the real photographs (marked)."""
    rows = {row[0]: row for row in read_tsv(test_tsv)}
    lines = []
    for pred in pick_predictions(task, result, count):
        row = rows[_pred_id(task, pred)]
        lines.append(("[photo] " if _is_photo(row[0]) else "") + sample_line(task, pred, row))
    return lines


def draw_grounding(result: dict, test_tsv: Path, path: Path, count: int = 4, size: int = 192) -> Path:
    """Test images (``count`` shapes-world ones, then the photos) resized to ``size`` x ``size`` with the true
    (green) and predicted (red) boxes."""
    rows = {row[0]: row for row in read_tsv(test_tsv)}
    preds = pick_predictions("refcoco", result, count)
    canvas = Image.new("RGB", (max(1, len(preds)) * (size + 4), size), "white")
    for i, pred in enumerate(preds):
        row = rows[str(pred["uniq_id"])]
        image = decode_base64_image(row[4])
        sx, sy = size / image.width, size / image.height
        image = image.resize((size, size), Image.NEAREST if image.width <= 64 else Image.BICUBIC)
        draw = ImageDraw.Draw(image)
        for box, color, width in ((row[3].split(","), (0, 200, 0), 3), (pred["box"], (255, 0, 0), 2)):
            x0, y0, x1, y1 = (max(0.0, float(v)) for v in box)
            draw.rectangle([x0 * sx, y0 * sy, x1 * sx, y1 * sy], outline=color, width=width)
        canvas.paste(image, (i * (size + 4), 0))
    canvas.save(path)
    return path


def report(results: dict, paths: dict, total: float) -> str:
    """The before/after table, sample predictions and the "what to expect" summary."""
    lines = ["", "=" * 72, f"{'task':<10}{'metric':<14}{'before':>9}{'after':>9}{'updates':>9}{'train s':>10}"]
    for task, res in results.items():
        name = METRIC[task][1]
        lines.append(f"{task:<10}{name:<14}{res['before']:>9.3f}{res['after']:>9.3f}{res['updates']:>9}"
                     f"{res['train_seconds']:>10.1f}")  # fmt: skip
    if "vqa_gen" in results:
        lines.append(f"(VQA majority-answer baseline on the test split: {majority_rate(paths['test']['vqa_gen']):.3f})")
    for task, res in results.items():
        lines += ["", f"{task} samples (after training):"]
        lines += ["  " + s for s in samples(task, res, paths["test"][task])]
    lines += ["", "([photo]: scikit-image sample photographs, also seen in training; see data/PHOTO_LICENSES.txt)"]
    lines += ["", f"total time {total / 60:.1f} min; outputs under {paths['out']}", "=" * 72]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_output", help="output folder (data, checkpoints, results, PNG)")
    parser.add_argument("--quick", action="store_true", help="a few images and 2 updates per task (smoke test)")
    parser.add_argument("--tasks", default="caption,vqa_gen,refcoco", help="comma-separated subset of tasks")
    parser.add_argument("--updates", type=float, default=1.0, help="scale the number of updates per task")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(QUICK if args.quick else Settings())
    cfg.updates = {t: max(1, round(n * args.updates)) for t, n in cfg.updates.items()}
    out, start = Path(args.out), time.time()
    paths = build_data(out, cfg, args.seed) | {"out": out}
    results = {task: run_task(task, paths, out, cfg, args.seed) for task in args.tasks.split(",")}
    if "refcoco" in results:
        draw_grounding(results["refcoco"], paths["test"]["refcoco"], out / "grounding.png")
    summary = {t: {k: v for k, v in r.items() if k != "predictions"} for t, r in results.items()}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(report(results, paths, time.time() - start), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
