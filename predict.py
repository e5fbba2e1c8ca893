"""Predict with an OFA checkpoint on image files or texts; one JSON line per input.

    python predict.py --path CKPT --task caption photos/ extra.jpg
    python predict.py --path CKPT --task vqa img.jpg --question "what color is the car?"
    python predict.py --path CKPT --task ground img.jpg --text "the man on the left" --draw box.png
    python predict.py --path CKPT --task summarize "article text ..."
    python predict.py --path CKPT --task vqa --requests requests.jsonl --output answers.jsonl
    python predict.py generate-image "a red bus" --path CKPT --out gen/ --num-samples 8 --seed 42
        --vqgan-model-path vqgan/last.ckpt --vqgan-config-path vqgan/model.yaml [--clip-model-path ViT-B-16.pt]

The task may also come first, as a subcommand (``predict.py caption img.jpg --path CKPT``). INPUTS are image
files, folders (their image files, sorted) or glob patterns; for ``summarize`` and ``generate-image`` they are
the texts. ``--requests`` reads JSONL requests (``{"image": ..., "question": ...}``, ``{"image": ..., "text":
...}``, ``{"text": ...}``). Errors (missing/unreadable image, unknown task, missing question/text) are one line
on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

CLI_TASKS = ("caption", "vqa", "ground", "classify", "summarize", "generate-image")
TEXT_TASKS = ("summarize", "generate-image")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
RESULT_KEY = {"caption": "caption", "vqa": "answer", "classify": "answer", "summarize": "summary"}  # str results


class UsageError(Exception):
    """A bad command line or input; reported as one stderr line with exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Raise instead of printing usage + message, so the error stays one line."""
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = OneLineParser(prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files, folders or globs (summarize: texts)")
    p.add_argument("--path", required=True, help="checkpoint file")
    p.add_argument("--task", required=True, help="one of " + ", ".join(CLI_TASKS))
    p.add_argument("--bpe-dir", help="BPE folder (default: the checkpoint's saved one)")
    p.add_argument("--question", help="vqa: the question for every input image")
    p.add_argument("--text", help="ground: the expression for every image; summarize: one more text")
    p.add_argument("--requests", help="JSONL file with one request per line")
    p.add_argument("--output", help="JSONL output file (default: stdout)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--bf16", action="store_true", help="run under bfloat16 autocast")
    p.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    p.add_argument("--beam", type=int, help="beam size (default: the task's recipe)")
    p.add_argument("--draw", help="ground: PNG with the box drawn (several images: NAME_{i}.png)")
    g = p.add_argument_group("generate-image")
    g.add_argument("--out", help="folder for the images (all_results/ best first, top1/)")
    g.add_argument("--num-samples", type=int, default=24, help="images sampled per text (recipe: 24)")
    g.add_argument("--seed", type=int, default=42, help="sampling seed (recipe: 42)")
    g.add_argument("--sampling-topk", type=int, default=256)
    g.add_argument("--vqgan-model-path", help="taming VQGAN last.ckpt")
    g.add_argument("--vqgan-config-path", help="taming VQGAN model.yaml")
    g.add_argument("--clip-model-path", help="OpenAI-format CLIP ViT-B/16 for reranking (optional)")
    return p


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Image paths from files, folders (image files inside, sorted) and glob patterns, in the given order."""
    paths: list[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(str(f) for f in Path(pattern).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UsageError(f"folder {pattern} holds no image files")
            paths += found
        elif glob.has_magic(pattern) and not os.path.exists(pattern):
            found = sorted(glob.glob(pattern))
            if not found:
                raise UsageError(f"no files match {pattern}")
            paths += found
        else:
            paths.append(pattern)
    return paths


def read_requests(path: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (blank lines skipped)."""
    if not os.path.isfile(path):
        raise UsageError(f"requests file {path} does not exist")
    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}:{number}: not JSON ({err.msg})") from None
        if not isinstance(request, dict):
            raise UsageError(f"{path}:{number}: a request must be a JSON object")
        out.append(request)
    return out


def collect_requests(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every request as a dict (``image`` / ``question`` / ``text``), checked for the task's required fields."""
    if args.task in TEXT_TASKS:
        requests = [{"text": t} for t in [*args.inputs, *([args.text] if args.text else [])]]
    else:
        requests = [{"image": p, "question": args.question, "text": args.text} for p in expand_inputs(args.inputs)]
    if args.requests:
        requests += read_requests(args.requests)
    if not requests:
        raise UsageError("no inputs: give image files/folders/globs, texts or --requests")
    needed = {"vqa": "question", "ground": "text", "summarize": "text", "generate-image": "text"}.get(args.task)
    flag = {"question": "--question", "text": "--text"}
    for request in requests:
        if needed and not request.get(needed):
            raise UsageError(f"{args.task} needs {flag[needed]} (or a {needed!r} in each --requests line)")
        if args.task not in TEXT_TASKS and not request.get("image"):
            raise UsageError(f"{args.task} needs an image for every request")
    return requests


def load_images(requests: list[dict[str, Any]]) -> list[Any]:
    """Every request's image, read up front so a bad file fails before the checkpoint is loaded."""
    from models.predictor import to_image

    images = []
    for request in requests:
        try:
            images.append(to_image(str(request["image"])))
        except ValueError as err:
            raise UsageError(f"cannot read image {err}") from None
    return images


def predict(args: argparse.Namespace, requests: list[dict[str, Any]], images: list[Any]) -> list[dict[str, Any]]:
    """Run the predictor; one output record per request."""
    from models.predictor import OFAPredictor

    predictor = OFAPredictor.from_pretrained(args.path, bpe_dir=args.bpe_dir, device=args.device, bf16=args.bf16,
                                             ema=args.ema)  # fmt: skip
    predictor.batch_size = args.batch_size
    task = args.task
    if task == "caption":
        results: list[Any] = predictor.caption(images, beam=args.beam)
    elif task == "vqa":
        results = predictor.vqa(images, [r["question"] for r in requests], beam=args.beam)
    elif task == "ground":
        results = predictor.ground(images, [r["text"] for r in requests], beam=args.beam)
    elif task == "classify":
        results = predictor.classify(images)
    elif task == "generate-image":
        results = predictor.generate_images(
            [r["text"] for r in requests], args.out, vqgan_model_path=args.vqgan_model_path,
            vqgan_config_path=args.vqgan_config_path, clip_model_path=args.clip_model_path,
            num_samples=args.num_samples, seed=args.seed, sampling_topk=args.sampling_topk,
        )  # fmt: skip
    else:
        results = predictor.summarize([r["text"] for r in requests], beam=args.beam)
    records = []
    for request, result in zip(requests, results, strict=True):
        record = {k: v for k, v in request.items() if v is not None}
        record["task"] = task
        record.update(result if isinstance(result, dict) else {RESULT_KEY[task]: result})
        records.append(record)
    return records


def draw_boxes(target: str, images: list[Any], records: list[dict[str, Any]]) -> list[str]:
    """Write each image with its predicted box (red) as PNG: ``target``, or ``NAME_{i}.png`` for several."""
    from PIL import ImageDraw

    out = Path(target)
    written = []
    for i, (image, record) in enumerate(zip(images, records, strict=True)):
        path = out if len(images) == 1 else out.with_name(f"{out.stem}_{i}.png")
        canvas = image.copy()
        width = max(1, round(min(canvas.size) / 100))
        ImageDraw.Draw(canvas).rectangle(record["box"], outline=(255, 0, 0), width=width)
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(path, format="PNG")
        written.append(str(path))
    return written


def check_generate_image(args: argparse.Namespace) -> None:
    """generate-image needs --out and both VQGAN files (they turn codes into pixels); the others must not use them."""
    if args.task != "generate-image":
        if args.out or args.vqgan_model_path or args.clip_model_path:
            raise UsageError("--out / --vqgan-* / --clip-model-path are only for generate-image")
        return
    for flag, value in (("--out", args.out), ("--vqgan-model-path", args.vqgan_model_path),
                        ("--vqgan-config-path", args.vqgan_config_path)):  # fmt: skip
        if not value:
            raise UsageError(f"generate-image needs {flag}")
    for flag, value in (("--vqgan-model-path", args.vqgan_model_path), ("--vqgan-config-path", args.vqgan_config_path),
                        ("--clip-model-path", args.clip_model_path)):  # fmt: skip
        if value and not os.path.isfile(value):
            raise UsageError(f"{flag} {value} does not exist")
    if args.num_samples < 1:
        raise UsageError("--num-samples must be at least 1")


def run(argv: Sequence[str]) -> int:
    """Parse, check every input, predict, draw and write the JSONL; raises on bad input."""
    argv = list(argv)
    if argv and argv[0] in CLI_TASKS:  # subcommand form: predict.py TASK ...
        argv = ["--task", argv[0], *argv[1:]]
    args = build_parser().parse_args(argv)
    if args.task not in CLI_TASKS:
        raise UsageError(f"unknown task {args.task!r}; valid tasks: {', '.join(CLI_TASKS)}")
    if args.draw and args.task != "ground":
        raise UsageError("--draw is only for --task ground")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not os.path.isfile(args.path):
        raise UsageError(f"checkpoint {args.path} does not exist")
    check_generate_image(args)
    requests = collect_requests(args)
    images = load_images(requests) if args.task not in TEXT_TASKS else []
    records = predict(args, requests, images)
    if args.draw:
        draw_boxes(args.draw, images, records)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if args.output:
        Path(args.output).write_text(lines, encoding="utf-8")
    else:
        sys.stdout.write(lines)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; errors become ``predict.py: error: ...`` on one stderr line and exit code 2."""
    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except (UsageError, FileNotFoundError, ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"predict.py: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
