"""The embedded demo: train tiny OFA models from scratch on a generated shapes world and watch them learn.

``python demo.py [--out demo_output] [--quick]`` runs offline on a CPU:

1. writes the shapes-world TSVs (caption, vqa_gen, refcoco) and trains a small byte-level BPE tokenizer on
   their texts (no GPT-2 BPE files needed);
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
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import evaluate
import train
from data.images import decode_base64_image
from data.shapes import SELECTED_COLS, read_tsv, write_dataset
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
    vocab_size: int = 300
    eval_batch_size: int = 16


QUICK = Settings(n_train=4, n_test=2, updates={"caption": 2, "vqa_gen": 2, "refcoco": 2}, batch_size=4)


def build_data(out: Path, cfg: Settings, seed: int) -> dict:
    """Write the shapes-world dataset and train the tokenizer; returns the dataset paths plus ``tokenizer``."""
    paths = write_dataset(out / "data", n_train=cfg.n_train, n_test=cfg.n_test, seed=seed, size=64)
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


def samples(task: str, result: dict, test_tsv: Path, count: int = 3) -> list[str]:
    """``count`` readable "input -> prediction (truth)" lines for one task."""
    rows = {row[0]: row for row in read_tsv(test_tsv)}
    lines = []
    for pred in result["predictions"][:count]:
        if task == "caption":
            lines.append(f"image {pred['image_id']}: {pred['caption']!r}  (truth: {rows[str(pred['image_id'])][2]!r})")
        elif task == "vqa_gen":
            row = rows[str(pred["question_id"])]
            lines.append(f"{row[2]} -> {pred['answer']!r}  (truth: {row[3].split('|!+')[1]!r})")
        else:
            row = rows[str(pred["uniq_id"])]
            box = ",".join(f"{v:.0f}" for v in pred["box"])
            truth = [float(v) for v in row[3].split(",")]
            lines.append(f"{row[2]!r} -> box {box}  (truth: {row[3]}, IoU {iou(pred['box'], truth):.2f})")
    return lines


def draw_grounding(result: dict, test_tsv: Path, path: Path, count: int = 6, scale: int = 4) -> Path:
    """A strip of test images with the true (green) and predicted (red) boxes, upscaled ``scale`` times."""
    rows = {row[0]: row for row in read_tsv(test_tsv)}
    preds = result["predictions"][:count]
    size = 64 * scale
    canvas = Image.new("RGB", (max(1, len(preds)) * (size + 4), size), "white")
    for i, pred in enumerate(preds):
        row = rows[str(pred["uniq_id"])]
        image = decode_base64_image(row[4]).resize((size, size), Image.NEAREST)
        draw = ImageDraw.Draw(image)
        truth = [float(v) * scale for v in row[3].split(",")]
        draw.rectangle(truth, outline=(0, 200, 0), width=3)
        draw.rectangle([max(0.0, float(v)) * scale for v in pred["box"]], outline=(255, 0, 0), width=2)
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
