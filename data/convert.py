"""Convert public dataset annotations + image folders into OFA's TSV files, images embedded as base64.

Usage (``--strict`` fails on the first missing/unreadable image or malformed entry instead of skipping it)::

    python -m data.convert coco-captions --annotations captions_train2014.json --images train2014 \\
        --out caption_train.tsv [--eval]
    python -m data.convert vqa --questions v2_OpenEnded_mscoco_val2014_questions.json \\
        --annotations v2_mscoco_val2014_annotations.json --images val2014 --out vqa_val.tsv
    python -m data.convert refcoco --refs 'refs(unc).p' --instances instances.json --images train2014 \\
        --split val --out refcoco_val.tsv
    python -m data.convert snli-ve --jsonl snli_ve_dev.jsonl --images flickr30k_images --out snli_ve_dev.tsv
    python -m data.convert folder --images DIR --labels labels.csv --task caption|image_classify --out out.tsv

The layouts are those of OFA's released files (``data.converters.coco`` and ``data.converters.local`` list
them). It prints ``wrote N rows to PATH (skipped M: reasons)``; each skip is also logged with the index of
the annotation entry or the image path. Exit status 1 on an error (unreadable annotations, ``--strict``).
"""

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from data.converters import (
    ConvertError,
    Entry,
    Malformed,
    coco_caption_entries,
    folder_entries,
    refcoco_entries,
    snli_ve_entries,
    vqa_entries,
    write_tsv,
)


def _entries(args: argparse.Namespace) -> list[Entry | Malformed]:
    """The entries of the chosen format, from the parsed arguments."""
    if args.format == "coco-captions":
        return coco_caption_entries(args.annotations, args.images, eval_mode=args.eval)
    if args.format == "vqa":
        return vqa_entries(args.questions, args.annotations, args.images)
    if args.format == "refcoco":
        return refcoco_entries(args.refs, args.instances, args.images, args.split)
    if args.format == "snli-ve":
        return snli_ve_entries(args.jsonl, args.images)
    return folder_entries(args.images, args.labels, args.task, args.label_names)


def build_parser() -> argparse.ArgumentParser:
    """The ``data.convert`` argument parser: one subcommand per input format."""
    parser = argparse.ArgumentParser(prog="python -m data.convert", description=__doc__.split("\n")[0])
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    captions = formats.add_parser("coco-captions", help="COCO captions_*.json -> caption TSV")
    captions.add_argument("--annotations", type=Path, required=True, help="captions_*.json")
    captions.add_argument("--eval", action="store_true", help="one row per image, captions joined by &&")
    vqa = formats.add_parser("vqa", help="VQAv2 questions (+ annotations) -> vqa TSV")
    vqa.add_argument("--questions", type=Path, required=True, help="v2_OpenEnded_mscoco_*_questions.json")
    vqa.add_argument("--annotations", type=Path, help="v2_mscoco_*_annotations.json (none for test splits)")
    refcoco = formats.add_parser("refcoco", help="refer-format refs + COCO instances -> refcoco TSV")
    refcoco.add_argument("--refs", type=Path, required=True, help="refs(unc).p / refs(umd).p, or a .json export")
    refcoco.add_argument("--instances", type=Path, required=True, help="instances.json of the same dataset")
    refcoco.add_argument("--split", required=True, help="train, val, test, testA, testB, ...")
    snli = formats.add_parser("snli-ve", help="SNLI-VE jsonl -> snli_ve TSV")
    snli.add_argument("--jsonl", type=Path, required=True, help="snli_ve_{train,dev,test}.jsonl")
    folder = formats.add_parser("folder", help="image folder + labels.csv/.jsonl -> caption or image_classify TSV")
    folder.add_argument("--labels", type=Path, required=True, help="CSV (header file,caption|label) or JSONL")
    folder.add_argument("--task", choices=("caption", "image_classify"), required=True)
    folder.add_argument("--label-names", type=Path, help="label names, one a line, for 1-based label indices")
    for sub in (captions, vqa, refcoco, snli, folder):
        sub.add_argument("--images", type=Path, required=True, help="the folder of the image files")
        sub.add_argument("--out", type=Path, required=True, help="the TSV file to write")
        sub.add_argument("--strict", action="store_true", help="fail instead of skipping an entry")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; prints the summary line and returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = write_tsv(_entries(args), args.out, strict=args.strict, desc=args.format)
    except (ConvertError, OSError) as err:  # OSError: the output cannot be written (permissions, disk full)
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
