"""Random-access TSV datasets in OFA's file layout, with seeded per-epoch shuffling and rank sharding.

OFA stores every dataset as a TSV file, one sample per line, whose columns are picked and reordered by
``--selected-cols`` (spec section 3.1); images are base64 strings in one of the columns (see
``data/images.py``). This module keeps those file conventions and the comma-separated ``--data`` rule
(``parse_data_paths``), but changes how rows are visited:

* The original ``FileDataset`` gives each rank a contiguous slice and reads it *sequentially*, ignoring the
  index it is asked for, so the order is the file order and shuffling needs pre-shuffled copies of the
  data. ``TSVFile`` instead builds a byte-offset index of line starts and reads any row on demand, and
  ``epoch_batches`` draws a seeded permutation per epoch and deals it out to ranks.
* Rows are dealt so that one process accumulating gradients over W micro-batches of B rows sees exactly the
  rows that W ranks with batch size B see in one update (see ``epoch_batches``).
* A malformed row raises ``BadRowError`` naming the file and line, instead of an ``IndexError`` from deep
  inside a dataset; ``data.loading`` lets a run skip up to ``--skip-bad-rows`` of them.
* Offsets are counted in bytes on ``\n`` only, so ``\r\n`` files work (the original measured text-mode
  lines, whose newline translation shifts every offset of such files) and ``\r`` is not left in the last
  column. Columns are returned as strings; the original's ``dtypes`` option is left to the caller.

The index is cached beside the data as ``<file>.index`` (numpy ``.npy`` with the file's size and mtime, so a
stale cache is rebuilt). An ``.index`` file in another format, such as the pickle written by the original
code's ``cached_index`` option, is left untouched and the index is kept in memory.
"""

import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 16 * 1024 * 1024
# header of the cached index: magic, format version, file size, file mtime (ns); then the offsets
_INDEX_MAGIC = 0x4F46415F54535649  # "OFA_TSVI"
_INDEX_VERSION = 1
_HEADER_LEN = 4


class BadRowError(ValueError):
    """A TSV row that cannot be used: names the file, the 1-based line number and the reason.

    ``BadRowError(message)`` with one argument is also accepted, because torch's DataLoader re-raises a
    worker's exception in the main process as ``type(err)(formatted_traceback)``; the type survives (so a
    trainer can catch it) while ``path`` and ``line`` are then ``None`` and ``reason`` is that text.
    """

    def __init__(self, path: str | os.PathLike, line: int | None = None, reason: str | None = None) -> None:
        message_only = line is None or reason is None
        self.path: str | None = None if message_only else str(path)
        self.line: int | None = None if message_only else line
        self.reason: str = str(path) if message_only else reason
        super().__init__(self.reason if message_only else f"bad row in {path} at line {line}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # the default reduce passes only the message to __init__; keep the fields across process boundaries
        if self.path is None:
            return (type(self), (self.reason,))
        return (type(self), (self.path, self.line, self.reason))


def parse_selected_cols(selected_cols: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"0,4,2"`` (or a sequence of ints) -> ``(0, 4, 2)``; ``None`` or ``""`` -> ``None`` (all columns)."""
    if selected_cols is None:
        return None
    if isinstance(selected_cols, str):
        parts = [p.strip() for p in selected_cols.split(",")]
        if parts == [""]:
            return None
        try:
            cols = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"--selected-cols {selected_cols!r} is not a comma-separated list of ints") from None
    else:
        cols = tuple(int(c) for c in selected_cols)
    if not cols or any(c < 0 for c in cols):
        raise ValueError(f"--selected-cols {selected_cols!r}: column indices must be >= 0 (0-based)")
    return cols


def scan_line_offsets(path: str | os.PathLike) -> np.ndarray:
    """Byte offsets of the line starts of ``path``, read in chunks (the file is never held in memory).

    Trailing empty lines (only ``\\n`` or ``\\r\\n``) are not rows: files written with an extra newline at
    the end are common, and the original counted such a line as a sample that then failed to parse.
    """
    newline_ends = []
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            # the byte after each '\n' starts a line
            newline_ends.append(np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 0x0A) + (size + 1))
            size += len(chunk)
        starts = np.concatenate([np.zeros(1, dtype=np.int64), *newline_ends]).astype(np.int64)
        starts = starts[starts < size]
        while len(starts):
            fh.seek(int(starts[-1]))
            if fh.read(3).rstrip(b"\r\n"):
                break
            starts = starts[:-1]
    return starts


def _file_signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _load_index_cache(cache: Path, signature: tuple[int, int]) -> tuple[np.ndarray | None, bool]:
    """(offsets or None if absent/stale, whether the cache file may be overwritten)."""
    if not cache.exists():
        return None, True
    try:
        data = np.load(cache, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        data = None
    if data is None or data.ndim != 1 or len(data) < _HEADER_LEN or int(data[0]) != _INDEX_MAGIC:
        logger.warning("%s is not an index written by this code; leaving it alone, indexing in memory", cache)
        return None, False
    if int(data[1]) != _INDEX_VERSION or (int(data[2]), int(data[3])) != signature:
        logger.info("%s is stale (the data file changed); rebuilding it", cache)
        return None, True
    return data[_HEADER_LEN:].astype(np.int64), True


def _save_index_cache(cache: Path, offsets: np.ndarray, signature: tuple[int, int]) -> None:
    header = np.array([_INDEX_MAGIC, _INDEX_VERSION, *signature], dtype=np.int64)
    # write to a temporary file then rename, so ranks indexing the same file at once never read half a cache
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.concatenate([header, offsets]))
        os.replace(tmp, cache)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TSVFile:
    """Random access to the rows of a TSV file, as lists of the selected columns in the selected order.

    ``tsv[i]`` seeks to the i-th line and splits it on ``separator``; ``line_number(i)`` is its 1-based line
    number in the file. The file handle is opened lazily and again in every process that uses the object
    (a DataLoader worker must not share the parent's file position), and is dropped when pickled.
    """

    def __init__(
        self, path: str | os.PathLike, selected_cols: str | Sequence[int] | None = None, separator: str = "\t"
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"data file {self.path} (given by --data) does not exist or is not a file")
        if not separator:
            raise ValueError("the TSV separator must not be empty")
        self.selected_cols = parse_selected_cols(selected_cols)
        self.separator = separator
        self._offsets: np.ndarray | None = None
        self._fh: BinaryIO | None = None
        self._pid: int | None = None

    # ---- index -------------------------------------------------------------------------------------------

    @property
    def offsets(self) -> np.ndarray:
        """Byte offset of the start of every row (built, or loaded from ``<path>.index``, on first use)."""
        if self._offsets is None:
            self._offsets = self._load_or_build_index()
            try:
                self._check_selected_cols()
            except ValueError:
                self._offsets = None  # check again (and fail again) on the next use
                raise
        return self._offsets

    def _load_or_build_index(self) -> np.ndarray:
        cache = self.path.with_name(self.path.name + ".index")
        signature = _file_signature(self.path)
        offsets, writable = _load_index_cache(cache, signature)
        if offsets is not None:
            return offsets
        offsets = scan_line_offsets(self.path)
        logger.info("indexed %s: %d rows", self.path, len(offsets))
        if writable:
            try:
                _save_index_cache(cache, offsets, signature)
            except OSError as err:
                # a read-only data directory is normal (shared datasets); the index then lives in memory
                logger.debug("could not cache the index of %s (%s); keeping it in memory", self.path, err)
        return offsets

    def _check_selected_cols(self) -> None:
        # a --selected-cols typo would otherwise surface as "bad row" on every line; the first rows tell (a few, so
        # that one bad row at the top is reported, or skipped, as a bad row and not taken for a wrong flag)
        if not self.selected_cols or len(self._offsets) == 0:
            return
        counts = []
        for index in range(min(3, len(self._offsets))):
            with contextlib.suppress(BadRowError):
                counts.append(len(self._read_line(index).split(self.separator)))
        if counts and max(self.selected_cols) >= max(counts):
            raise ValueError(
                f"--selected-cols {','.join(map(str, self.selected_cols))} selects column "
                f"{max(self.selected_cols)} but the first rows of {self.path} have only {max(counts)} columns"
            )

    # ---- rows --------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.offsets)

    def _row_index(self, i: int) -> int:
        n = len(self)
        index = int(i)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"row {i} out of range for {self.path} ({n} rows)")
        return index

    def line_number(self, i: int) -> int:
        """1-based line number of row ``i`` in the file (every line is a row, blank ones included)."""
        return self._row_index(i) + 1

    def _handle(self) -> BinaryIO:
        # a handle inherited through fork shares its file position with the parent: open our own
        if self._fh is None or self._pid != os.getpid():
            self._fh = open(self.path, "rb")  # noqa: SIM115 (kept open for the object lifetime)
            self._pid = os.getpid()
        return self._fh

    def _read_line(self, index: int) -> str:
        fh = self._handle()
        fh.seek(int(self.offsets[index]))
        raw = fh.readline()
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadRowError(self.path, index + 1, f"not valid UTF-8 ({err.reason} at byte {err.start})") from None

    def __getitem__(self, i: int) -> list[str]:
        index = self._row_index(i)
        columns = self._read_line(index).split(self.separator)
        if self.selected_cols is None:
            return columns
        needed = max(self.selected_cols) + 1
        if len(columns) < needed:
            raise BadRowError(self.path, index + 1, f"expected at least {needed} columns, got {len(columns)}")
        return [columns[c] for c in self.selected_cols]

    def close(self) -> None:
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fh"] = None
        state["_pid"] = None
        return state

    def __repr__(self) -> str:
        rows = "?" if self._offsets is None else len(self._offsets)
        return f"TSVFile({str(self.path)!r}, selected_cols={self.selected_cols}, rows={rows})"


def parse_data_paths(data: str, split: str, epoch: int) -> str:
    """The file of ``split`` for 1-based ``epoch`` under OFA's comma-separated ``--data`` convention.

    With two or more paths the last one is the validation/test file and training rotates over the others,
    one per epoch; a single path serves every split.
    """
    paths = [p.strip() for p in data.split(",")]
    if not data.strip() or any(not p for p in paths):
        raise ValueError(f"--data {data!r} must be a comma-separated list of non-empty paths")
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got epoch {epoch}")
    if split != "train":
        return paths[-1]
    if len(paths) == 1:
        return paths[0]
    return paths[(epoch - 1) % (len(paths) - 1)]


def epoch_batches(
    num_rows: int,
    batch_size: int,
    *,
    epoch: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[list[int]]:
    """The batches of row indices that ``rank`` processes in ``epoch``.

    A permutation of ``range(num_rows)`` drawn from ``torch.Generator().manual_seed(seed + epoch)`` (the
    identity without ``shuffle``) is cut into consecutive global batches of ``world_size * batch_size``
    rows, and rank r takes the r-th run of ``batch_size`` rows of each. One process with gradient
    accumulation over W micro-batches therefore sees the same rows per update as W ranks.

    Every rank gets one batch per global batch. In a short last global batch the ranks past its end get an
    empty batch ``[]`` (they still join the collectives), unless ``drop_last`` drops that global batch.
    Without ``drop_last`` every row appears exactly once across ranks.
    """
    if num_rows < 0 or batch_size < 1 or world_size < 1:
        raise ValueError(f"bad sizes: num_rows={num_rows}, batch_size={batch_size}, world_size={world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    if shuffle:
        order = torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    else:
        order = list(range(num_rows))
    global_size = world_size * batch_size
    num_global = num_rows // global_size if drop_last else -(-num_rows // global_size)
    starts = [g * global_size + rank * batch_size for g in range(num_global)]
    # slicing past the end of a short last global batch gives the trailing ranks their empty batch
    return [order[start : start + batch_size] for start in starts]
