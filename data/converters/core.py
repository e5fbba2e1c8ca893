"""The shared machinery of the dataset converters: entries, embedded images, the TSV writer and its summary.

A converter turns an annotation file into a list of ``Entry`` (one future TSV row whose image column is still
a file path) and ``Malformed`` (an annotation item that could not be read, named by its index). ``write_tsv``
then embeds each image, writes the rows and returns a ``Summary`` with the skip counts by reason.

Images are embedded as OFA's files store them: urlsafe base64 of the image file's bytes. JPEG and PNG files
are embedded byte-for-byte (lossless and fast, no decode); any other format PIL reads is re-encoded as PNG.
"""

import base64
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from data.images import check_image_bytes, encode_image_base64, load_image

logger = logging.getLogger(__name__)

T = TypeVar("T")

_KEEP_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG: embedded as they are
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_TEXT_SEPARATORS = str.maketrans({"\t": " ", "\r": " ", "\n": " "})
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
MALFORMED = "malformed entry"


class ConvertError(Exception):
    """A conversion that cannot go on: an unreadable annotation file, or a skip under ``--strict``."""


@dataclass(frozen=True)
class Entry:
    """One TSV row to write: text columns, with ``None`` where the base64 of ``image`` goes."""

    where: str
    image: Path
    columns: tuple[str | None, ...]


@dataclass(frozen=True)
class Malformed:
    """An annotation item that could not be turned into a row: ``where`` is e.g. ``annotations[3]``."""

    where: str
    reason: str


@dataclass
class Summary:
    """What ``write_tsv`` did: rows written to ``path`` and skips counted by reason."""

    path: Path
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)

    def line(self) -> str:
        """``wrote N rows to PATH (skipped M: reason k, ...)``."""
        total = sum(self.skipped.values())
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items()))
        return f"wrote {self.rows} rows to {self.path} (skipped {total}{': ' + reasons if reasons else ''})"


def clean_text(text: Any) -> str:
    """A text column: ``str(text)`` with tabs and line breaks (which would break the TSV) made spaces."""
    return str(text).translate(_TEXT_SEPARATORS).strip()


def describe_error(err: Exception) -> str:
    """A one-line reason for a malformed annotation item."""
    if isinstance(err, KeyError):
        return f"missing key {err}"
    return f"{type(err).__name__}: {err}"


def build_each(items: Sequence[T], label: str, build: Callable[[T], Entry | None]) -> list[Entry | Malformed]:
    """``build`` each item; an item that raises becomes ``Malformed(label[i])``, one that returns None is dropped."""
    entries: list[Entry | Malformed] = []
    for i, item in enumerate(items):
        try:
            entry = build(item)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            entries.append(Malformed(f"{label}[{i}]", describe_error(err)))
            continue
        if entry is not None:
            entries.append(entry)
    return entries


def load_json(path: Path) -> Any:
    """Parse a JSON file; a missing or invalid file is a ``ConvertError`` naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConvertError(f"cannot read {path}: {err}") from None


def read_jsonl(path: Path) -> list[Any]:
    """The objects of a JSON-lines file (blank lines ignored); a line that is not JSON becomes ``None``."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConvertError(f"cannot read {path}: {err}") from None
    items: list[Any] = []
    for line in filter(str.strip, lines):
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError:
            items.append(None)  # reported as malformed, with its index, by build_each
    return items


def find_image(images: Path, *stems: str) -> Path:
    """The first of ``images/stem`` (as given, then + .jpg/.jpeg/.png) that exists; else ``images/<stems[0]>.jpg``."""
    with_ext = [images / (stem + ext) for stem in stems for ext in _IMAGE_EXTENSIONS]
    candidates = [images / stem for stem in stems] + with_ext
    return next((path for path in candidates if path.is_file()), with_ext[0])


@lru_cache(maxsize=16)
def image_base64(path: Path) -> str:
    """The urlsafe base64 of an image file: JPEG/PNG bytes as they are, other formats re-encoded as PNG.

    Raises ``FileNotFoundError`` if there is no such file and ``ValueError`` if PIL cannot read it. The cache
    serves the consecutive rows that share an image (several captions or questions per image).
    """
    if not path.is_file():
        raise FileNotFoundError(path)
    data = path.read_bytes()
    if data.startswith(_KEEP_MAGIC):
        check_image_bytes(data)  # no decode, but a decompression bomb or a broken header is refused here
        return base64.urlsafe_b64encode(data).decode("ascii")
    return encode_image_base64(load_image(path), format="PNG")


def _row(entry: Entry) -> str:
    """The TSV line of ``entry``, its image embedded."""
    encoded = image_base64(entry.image)
    return "\t".join(encoded if col is None else clean_text(col) for col in entry.columns) + "\n"


def _skip(summary: Summary, reason: str, message: str, strict: bool) -> None:
    if strict:
        raise ConvertError(f"{message} (--strict)")
    logger.warning("skipped: %s", message)
    summary.skipped[reason] += 1


def write_tsv(entries: Iterable[Entry | Malformed], out: Path, *, strict: bool = False, desc: str = "") -> Summary:
    """Write ``entries`` to ``out`` (atomically, via ``out.tmp``) with a progress bar; returns the summary.

    Missing or unreadable images and malformed entries are skipped and counted, or raise ``ConvertError``
    when ``strict``.
    """
    entries = list(entries)
    image_base64.cache_clear()  # the files may have changed since an earlier conversion
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = Summary(out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for entry in tqdm(entries, desc=desc or out.name, unit="row", leave=False):
                if isinstance(entry, Malformed):
                    _skip(summary, MALFORMED, f"{entry.where}: {entry.reason}", strict)
                    continue
                try:
                    fh.write(_row(entry))
                except FileNotFoundError:
                    _skip(summary, MISSING_IMAGE, f"{entry.where}: no image file {entry.image}", strict)
                    continue
                except ValueError as err:
                    _skip(summary, UNREADABLE_IMAGE, f"{entry.where}: {entry.image}: {err}", strict)
                    continue
                summary.rows += 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return summary
