"""Converters for SNLI-VE (jsonl) and for a plain folder of images with a CSV/JSONL label file.

Row layouts (OFA spec section 4; ``None`` marks the image column):

* snli_ve: ``uniq-id, image-id, image-base64, hypothesis, caption (premise), label`` with the raw SNLI label
  (``entailment``/``neutral``/``contradiction``; OFA's dataset maps them to yes/maybe/no). The uniq-id is the
  ``pairID`` when present, else the line index.
* folder, ``--task caption``: the caption layout ``uniq-id, image-id, caption, predicted-objects, image-base64``
  with uniq-id the row index and image-id the file name without its extension.
* folder, ``--task image_classify``: ``image-base64, label-index, label-name`` with 1-based label indices in
  the order of ``--label-names`` (one name a line, like Caffe's ``synset_words.txt`` that OFA's ImageNet data
  uses), or else in sorted order of the distinct names found; a label given as a number is taken as the index.
"""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data.converters.core import ConvertError, Entry, Malformed, build_each, find_image, read_jsonl

SNLI_LABELS = ("entailment", "neutral", "contradiction")
_IMAGE_ID_KEYS = ("Flickr30K_ID", "Flickr30kID", "Flickr30k_ID")


def snli_ve_entries(jsonl: Path, images: Path) -> list[Entry | Malformed]:
    """Rows of an SNLI-VE split (``snli_ve_{train,dev,test}.jsonl``); images are ``images/<Flickr30K_ID>.jpg``."""

    def build(indexed: tuple[int, dict]) -> Entry:
        index, item = indexed
        image_id = next((str(item[key]) for key in _IMAGE_ID_KEYS if key in item), None)
        if image_id is None:
            raise KeyError(_IMAGE_ID_KEYS[0])
        label = str(item["gold_label"]).strip()
        if label not in SNLI_LABELS:
            raise ValueError(f"gold_label {label!r} is not one of {', '.join(SNLI_LABELS)}")
        uniq_id = str(item.get("pairID", index))
        columns = (uniq_id, image_id, None, str(item["sentence2"]), str(item["sentence1"]), label)
        return Entry(f"line {index + 1}", find_image(images, image_id), columns)

    return build_each(list(enumerate(read_jsonl(jsonl))), "lines", build)


def read_labels(path: Path, value_key: str) -> list[dict[str, Any]]:
    """The records of a ``.csv`` (with a header row) or ``.jsonl`` label file; each needs ``file`` and ``value_key``."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return read_jsonl(path)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"file", value_key} <= set(reader.fieldnames):
                raise ConvertError(f"{path}: the header must have the columns 'file' and {value_key!r}")
            return list(reader)
    except (OSError, UnicodeDecodeError) as err:
        raise ConvertError(f"cannot read {path}: {err}") from None


def label_indices(records: Sequence[Any], names_file: Path | None) -> dict[str, int]:
    """``label name -> 1-based index``: from ``names_file`` lines, else the sorted distinct names of ``records``."""
    if names_file is not None:
        try:
            lines = Path(names_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ConvertError(f"cannot read {names_file}: {err}") from None
        names = [line.strip() for line in lines if line.strip()]
    else:
        found = {str(r["label"]).strip() for r in records if isinstance(r, dict) and r.get("label") is not None}
        names = sorted(name for name in found if not name.isdigit())
    return {name: index for index, name in enumerate(names, start=1)}


def _classify_columns(label: Any, indices: dict[str, int]) -> tuple[str | None, ...]:
    """``(None, label-index, label-name)`` for a label given as a name or as a 1-based index."""
    text = str(label).strip()
    if text.isdigit():
        names = {index: name for name, index in indices.items()}
        return (None, text, names.get(int(text), text))
    if text not in indices:
        raise ValueError(f"label {text!r} is not in the label names")
    return (None, str(indices[text]), text)


def folder_entries(images: Path, labels: Path, task: str, label_names: Path | None = None) -> list[Entry | Malformed]:
    """Rows for the images of a folder listed in a label file, as ``caption`` or ``image_classify`` rows."""
    if task not in ("caption", "image_classify"):
        raise ConvertError(f"unknown task {task!r} (caption or image_classify)")
    key = "caption" if task == "caption" else "label"
    records = read_labels(labels, key)
    indices = label_indices(records, label_names) if task == "image_classify" else {}

    def build(indexed: tuple[int, dict]) -> Entry:
        index, record = indexed
        name = str(record["file"]).strip()
        if not name or not str(record[key] or "").strip():  # an empty caption would be a bad training row
            raise ValueError(f"empty 'file' or {key!r}")
        if task == "caption":
            columns: tuple[str | None, ...] = (str(index), Path(name).stem, str(record[key]), "", None)
        else:
            columns = _classify_columns(record[key], indices)
        return Entry(f"{labels.name} row {index + 1} ({name})", images / name, columns)

    return build_each(list(enumerate(records)), "rows", build)
