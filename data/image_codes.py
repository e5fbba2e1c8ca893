"""Images -> VQGAN code rows for OFA's ``image_gen`` task (the original's ``run_scripts/image_gen/generate_code.py``).

Usage::

    python -m data.image_codes --tsv pairs.tsv [--selected-cols 0,1,2,3] --out codes.tsv \\
        --vqgan-ckpt vqgan/last.ckpt --vqgan-config vqgan/model.yaml [--code-image-size 256] [--device cuda]
    python -m data.image_codes --images DIR [--captions captions.csv|.jsonl] --out codes.tsv --vqgan-ckpt ...

Inputs and the rows written, as the original tool writes them (``code`` = the ``(H/8) * (W/8)`` indices in
row-major order, space-separated):

* a TSV whose selected columns are ``uniq-id, image-id, image-base64, text`` -> ``uniq-id, image-id, text, code``;
* a TSV whose selected columns are ``image-id, image-base64`` -> ``image-id, code``;
* ``--images DIR --captions FILE`` (CSV with the header columns ``file`` and ``caption``, or JSONL objects with
  those keys) -> the 4-column rows, uniq-id the 0-based row index and image-id the file name without its
  extension (as ``python -m data.convert folder``);
* ``--images DIR`` alone -> every image file of DIR, sorted by name -> ``image-id, code``.

The task reads ``uniq-id, caption, code``: ``--selected-cols 0,2,3`` on the 4-column output. ``--layout image_gen``
writes ``uniq-id, code, caption`` instead, the layout of OFA's released ``coco_vqgan_*.tsv`` that its recipes
read with ``--selected-cols 0,2,1``.

Preprocessing is the original's: RGB, resize of the *shorter* side to ``--code-image-size`` with LANCZOS
(torchvision ``Resize``), no crop, ``ToTensor``, ``2x - 1``. A non-square image therefore gives a non-square
grid (a 4:3 photo at 256 gives 32 x 42 codes, not 1,024) exactly as in the original; ``--center-crop`` crops
the resized image to a square first so every row has ``(size / 8) ** 2`` codes. The original's codes are
*sampled* (taming's Gumbel quantizer adds noise even in eval mode); here they are the deterministic argmax
unless ``--sample-codes`` (seeded by ``--seed``) is given.

An unreadable image or malformed row is skipped with a one-line warning naming it and counted in the final
``wrote N rows to PATH (skipped M: reasons)`` line; ``--strict`` makes it an error. Exit status 1 on errors.
"""

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from tqdm import tqdm

from data.converters.core import MALFORMED, MISSING_IMAGE, UNREADABLE_IMAGE, ConvertError, Summary, clean_text
from data.converters.local import read_labels
from data.images import decode_base64_image, load_image
from data.tsv import BadRowError, TSVFile
from models.vqgan import VQGAN, load_vqgan
from utils.checkpoint import CorruptCheckpointError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

LAYOUTS = ("generate_code", "image_gen")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One future output row: its id columns, caption (None for image-only input) and a lazy image loader."""

    where: str
    ids: tuple[str, ...]
    caption: str | None
    image: Callable[[], Image.Image]


@dataclass(frozen=True)
class Skip:
    """An input row that cannot become an output row, with the reason counted in the summary."""

    where: str
    reason: str
    message: str


def code_image_tensor(image: Image.Image, size: int, center_crop: bool = False) -> Tensor:
    """The original's code-image transform: RGB, shorter side -> ``size`` (LANCZOS), to [-1, 1]; (3, H, W)."""
    image = TF.resize(image.convert("RGB"), size, interpolation=InterpolationMode.LANCZOS)
    if center_crop:
        image = TF.center_crop(image, [size, size])
    return TF.to_tensor(image) * 2.0 - 1.0


def tsv_samples(path: Path, selected_cols: str | None) -> tuple[int, Iterator[Sample | Skip]]:
    """Rows of a TSV with (uniq-id, image-id, image, text) or (image-id, image) selected columns."""
    if not path.is_file():
        raise ConvertError(f"TSV file {path} does not exist")
    try:
        tsv = TSVFile(path, selected_cols)
        total = len(tsv)
    except (OSError, ValueError) as err:
        raise ConvertError(f"cannot read {path}: {err}") from None

    def rows() -> Iterator[Sample | Skip]:
        for i in range(total):
            where = f"{path.name} line {i + 1}"
            try:
                columns = tsv[i]
            except BadRowError as err:
                yield Skip(where, MALFORMED, f"{where}: {err.reason}")
                continue
            if len(columns) not in (2, 4):
                yield Skip(where, MALFORMED, f"{where}: {len(columns)} columns, expected 4 or 2 (see --selected-cols)")
                continue
            ids, data, text = (
                (columns[:2], columns[2], columns[3]) if len(columns) == 4 else (columns[:1], columns[1], None)
            )
            yield Sample(where, tuple(ids), text, lambda data=data: decode_base64_image(data))
        tsv.close()

    return total, rows()


def folder_samples(images: Path, captions: Path | None) -> tuple[int, Iterator[Sample | Skip]]:
    """The images listed in a captions CSV/JSONL (4-column rows), or every image file of ``images`` (2-column)."""
    if not images.is_dir():
        raise ConvertError(f"image folder {images} does not exist")
    if captions is None:
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        samples = [Sample(p.name, (p.stem,), None, lambda p=p: load_image(p)) for p in files]
        return len(samples), iter(samples)
    if not captions.is_file():
        raise ConvertError(f"captions file {captions} does not exist")
    records = read_labels(captions, "caption")
    items: list[Sample | Skip] = []
    for index, record in enumerate(records):
        where = f"{captions.name} row {index + 1}"
        name = str(record.get("file") or "").strip() if isinstance(record, dict) else ""
        if not name or record.get("caption") is None:
            items.append(Skip(where, MALFORMED, f"{where}: needs a 'file' and a 'caption'"))
            continue
        path = images / name
        ids = (str(index), Path(name).stem)
        items.append(Sample(f"{where} ({path})", ids, clean_text(record["caption"]), lambda p=path: load_image(p)))
    return len(items), iter(items)


def load_sample(sample: Sample, size: int, center_crop: bool) -> Tensor | Skip:
    """The sample's code image, or a ``Skip`` naming the row and file when the image is missing or unreadable."""
    try:
        return code_image_tensor(sample.image(), size, center_crop)
    except FileNotFoundError as err:
        return Skip(sample.where, MISSING_IMAGE, f"{sample.where}: {err}")
    except ValueError as err:
        return Skip(sample.where, UNREADABLE_IMAGE, f"{sample.where}: {err}")


def encode_batch(
    model: VQGAN,
    batch: list[tuple[Sample, Tensor]],
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Codes (row-major lists) of each sample; same-size images go through the model together."""
    device = next(model.parameters()).device
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (_, tensor) in enumerate(batch):
        by_shape.setdefault(tuple(tensor.shape), []).append(i)
    codes: list[list[int]] = [[] for _ in batch]
    for members in by_shape.values():
        images = torch.stack([batch[i][1] for i in members]).to(device)  # (b, 3, H, W)
        grids = (
            model.encode(images, sample=sample, generator=generator).flatten(1).cpu()
        )  # (b, H/8 * W/8), row-major like the original's view
        for i, grid in zip(members, grids.tolist(), strict=True):
            codes[i] = grid
    return codes


def format_row(sample: Sample, codes: list[int], layout: str) -> str:
    """The output line: the original's column order, or ``uniq-id, code, caption`` for ``--layout image_gen``."""
    code = " ".join(map(str, codes))
    if layout == "image_gen":
        if sample.caption is None:
            raise ConvertError(f"{sample.where}: --layout image_gen needs a caption, this input has none")
        return "\t".join((sample.ids[0], code, sample.caption)) + "\n"
    text = () if sample.caption is None else (sample.caption,)
    return "\t".join((*sample.ids, *text, code)) + "\n"


@dataclass
class Options:
    """What ``write_codes`` needs besides the model and the samples."""

    size: int = 256
    batch_size: int = 32
    center_crop: bool = False
    sample_codes: bool = False
    seed: int = 0
    layout: str = "generate_code"
    strict: bool = False


def _skip(summary: Summary, skip: Skip, strict: bool) -> None:
    if strict:
        raise ConvertError(f"{skip.message} (--strict)")
    logger.warning("skipped: %s", skip.message)
    summary.skipped[skip.reason] += 1


def _batches(
    samples: Iterator[Sample | Skip], opts: Options
) -> Iterator[tuple[list[tuple[Sample, Tensor]], list[Skip]]]:
    """Groups of up to ``batch_size`` loaded images, with the rows skipped while filling each group."""
    batch: list[tuple[Sample, Tensor]] = []
    skips: list[Skip] = []
    for item in samples:
        loaded = item if isinstance(item, Skip) else load_sample(item, opts.size, opts.center_crop)
        if isinstance(loaded, Skip):
            skips.append(loaded)
        else:
            batch.append((item, loaded))
        if len(batch) == opts.batch_size:
            yield batch, skips
            batch, skips = [], []
    if batch or skips:
        yield batch, skips


def write_codes(model: VQGAN, samples: Iterator[Sample | Skip], total: int, out: Path, opts: Options) -> Summary:
    """Encode every sample and write its row to ``out`` (atomically, via ``out.tmp``); returns the summary."""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(opts.seed) if opts.sample_codes else None
    summary, other_sizes = Summary(out), 0
    square = (opts.size // model.cfg.downsample_factor) ** 2
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh, tqdm(total=total, unit="image", leave=False) as bar:
            for batch, skips in _batches(samples, opts):
                for skip in skips:
                    _skip(summary, skip, opts.strict)
                codes = encode_batch(model, batch, sample=opts.sample_codes, generator=generator)
                for (sample, _), row in zip(batch, codes, strict=True):
                    fh.write(format_row(sample, row, opts.layout))
                    summary.rows += 1
                    other_sizes += len(row) != square
                bar.update(len(batch) + len(skips))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    if other_sizes:
        message = "%d rows have other than %d codes (non-square images; --center-crop makes them square)"
        logger.warning(message, other_sizes, square)
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The ``data.image_codes`` arguments (the original's flags, spelled with dashes)."""
    parser = argparse.ArgumentParser(prog="python -m data.image_codes", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tsv", type=Path, help="TSV with base64 images (the original's --file)")
    source.add_argument("--images", type=Path, help="a folder of image files")
    parser.add_argument("--selected-cols", help="TSV columns: uniq-id,image-id,image,text or image-id,image")
    parser.add_argument("--captions", type=Path, help="with --images: CSV (header file,caption) or JSONL")
    parser.add_argument("--out", type=Path, required=True, help="the TSV file to write (the original's --outputs)")
    parser.add_argument("--vqgan-ckpt", type=Path, required=True, help="taming checkpoint, e.g. vqgan/last.ckpt")
    parser.add_argument("--vqgan-config", type=Path, required=True, help="taming config, e.g. vqgan/model.yaml")
    parser.add_argument("--code-image-size", type=int, default=256, help="shorter image side before encoding")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layout", choices=LAYOUTS, default="generate_code", help="output columns (see above)")
    parser.add_argument("--center-crop", action="store_true", help="crop to a square after the resize")
    parser.add_argument("--sample-codes", action="store_true", help="sample codes like the original (Gumbel)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample-codes")
    parser.add_argument("--strict", action="store_true", help="fail on the first bad row instead of skipping it")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.captions is not None and args.images is None:
        parser.error("--captions goes with --images")
    if args.selected_cols is not None and args.tsv is None:
        parser.error("--selected-cols goes with --tsv")
    if args.layout == "image_gen" and args.tsv is None and args.captions is None:
        parser.error("--layout image_gen needs captions (--captions, or a TSV with a text column)")
    if args.code_image_size <= 0 or args.batch_size <= 0:
        parser.error("--code-image-size and --batch-size must be positive")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the conversion; prints the summary line and returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opts = Options(
        size=args.code_image_size,
        batch_size=args.batch_size,
        center_crop=args.center_crop,
        sample_codes=args.sample_codes,
        seed=args.seed,
        layout=args.layout,
        strict=args.strict,
    )
    try:
        if args.tsv is not None:
            total, samples = tsv_samples(args.tsv, args.selected_cols)
        else:
            total, samples = folder_samples(args.images, args.captions)
        model = load_vqgan(args.vqgan_ckpt, args.vqgan_config, map_location=args.device)
        summary = write_codes(model, samples, total, args.out, opts)
    except (ConvertError, OSError, ValueError, UnsafeCheckpointError, CorruptCheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
