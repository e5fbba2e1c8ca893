"""Tests for data/tsv.py: the offset index and its cache, selected columns, bad rows, epoch batches."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from data import tsv as tsv_module
from data.tsv import (
    BadRowError,
    TSVFile,
    epoch_batches,
    parse_data_paths,
    scan_line_offsets,
)

ROWS = [
    ["1", "naïve café", "日本語", "🐱"],
    ["2", "", "", "empty middle columns"],
    ["3", "a b c", "x", ""],
    ["4", "last", "row", "ü"],
]


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _tsv_text(rows: list[list[str]], newline: str = "\n", trailing: bool = True) -> str:
    text = newline.join("\t".join(r) for r in rows)
    return text + newline if trailing else text


# ---- the index ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("newline,trailing", [("\n", True), ("\n", False), ("\r\n", True), ("\r\n", False)], ids=str)
def test_rows_equal_a_full_read(tmp_path, newline, trailing):
    path = _write(tmp_path / "d.tsv", _tsv_text(ROWS, newline, trailing))
    tsv = TSVFile(path)
    expected = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(tsv) == len(expected) == len(ROWS)
    assert [tsv[i] for i in range(len(tsv))] == expected == ROWS
    assert [tsv.line_number(i) for i in range(len(tsv))] == [1, 2, 3, 4]
    assert tsv[-1] == ROWS[-1]


def test_offsets_are_line_starts_across_chunk_boundaries(tmp_path, monkeypatch):
    # tiny chunks put line ends on every possible chunk boundary
    monkeypatch.setattr(tsv_module, "_CHUNK_BYTES", 3)
    lines = ["a", "", "bb\tcc", "ddd", "é\t€", "x" * 7]
    path = _write(tmp_path / "d.tsv", "\n".join(lines) + "\n")
    data = path.read_bytes()
    expected = [0] + [i + 1 for i, b in enumerate(data) if b == 0x0A][:-1]
    offsets = scan_line_offsets(path)
    assert offsets.dtype == np.int64
    assert offsets.tolist() == expected
    assert [TSVFile(path)[i] for i in range(len(lines))] == [line.split("\t") for line in lines]


def test_trailing_blank_lines_are_not_rows_but_inner_ones_are(tmp_path):
    path = _write(tmp_path / "d.tsv", "a\tb\n\nc\td\n\r\n\n")
    tsv = TSVFile(path)
    assert len(tsv) == 3
    assert tsv[1] == [""]
    assert tsv[2] == ["c", "d"]
    assert tsv.line_number(2) == 3


def test_empty_file_has_no_rows(tmp_path):
    tsv = TSVFile(_write(tmp_path / "d.tsv", ""), selected_cols="0,3")
    assert len(tsv) == 0
    with pytest.raises(IndexError):
        tsv[0]


def test_index_cache_is_reused_and_rebuilt_when_the_file_changes(tmp_path, monkeypatch):
    path = _write(tmp_path / "d.tsv", _tsv_text(ROWS))
    assert len(TSVFile(path)) == 4
    cache = tmp_path / "d.tsv.index"
    assert cache.exists()

    def no_scan(_path):
        raise AssertionError("the cached index should have been used")

    monkeypatch.setattr(tsv_module, "scan_line_offsets", no_scan)
    cached = TSVFile(path)
    assert len(cached) == 4 and cached[3] == ROWS[3]

    monkeypatch.undo()
    _write(path, _tsv_text(ROWS + [["5", "new", "row", "!"]]))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rebuilt = TSVFile(path)
    assert len(rebuilt) == 5 and rebuilt[4] == ["5", "new", "row", "!"]
    assert len(TSVFile(path)) == 5  # the rewritten cache matches the new file


def test_unwritable_directory_keeps_the_index_in_memory(tmp_path, monkeypatch):
    path = _write(tmp_path / "d.tsv", _tsv_text(ROWS))

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(tsv_module.tempfile, "mkstemp", refuse)
    tsv = TSVFile(path)
    assert len(tsv) == 4 and tsv[0] == ROWS[0]
    assert not (tmp_path / "d.tsv.index").exists()


def test_foreign_index_file_is_left_alone(tmp_path):
    # e.g. the pickle written by the original code's cached_index option
    path = _write(tmp_path / "d.tsv", _tsv_text(ROWS))
    foreign = tmp_path / "d.tsv.index"
    foreign.write_bytes(pickle.dumps((4, [0, 1, 2, 3])))
    before = foreign.read_bytes()
    tsv = TSVFile(path)
    assert [tsv[i] for i in range(4)] == ROWS
    assert foreign.read_bytes() == before


# ---- columns, errors, pickling --------------------------------------------------------------------------


@pytest.mark.parametrize("cols", ["3,0,2", [3, 0, 2], (3, 0, 2), " 3, 0 ,2 "])
def test_selected_cols_pick_and_reorder(tmp_path, cols):
    tsv = TSVFile(_write(tmp_path / "d.tsv", _tsv_text(ROWS)), selected_cols=cols)
    assert tsv.selected_cols == (3, 0, 2)
    assert tsv[0] == ["🐱", "1", "日本語"]
    assert tsv[2] == ["", "3", "x"]


def test_custom_separator(tmp_path):
    tsv = TSVFile(_write(tmp_path / "d.csv", "a,b,c\nd,e,f\n"), selected_cols="2,1", separator=",")
    assert [tsv[0], tsv[1]] == [["c", "b"], ["f", "e"]]


def test_short_row_raises_bad_row_error_with_file_and_line(tmp_path):
    path = _write(tmp_path / "d.tsv", "a\tb\tc\nd\te\n\ng\th\ti\n")
    tsv = TSVFile(path, selected_cols="0,2")
    assert tsv[0] == ["a", "c"] and tsv[3] == ["g", "i"]
    with pytest.raises(BadRowError) as info:
        tsv[1]
    err = info.value
    assert (err.path, err.line, err.reason) == (str(path), 2, "expected at least 3 columns, got 2")
    assert str(path) in str(err) and "line 2" in str(err)
    with pytest.raises(BadRowError, match="line 3: expected at least 3 columns, got 1"):
        tsv[2]
    # it survives a process boundary (DataLoader workers pickle exceptions) with its fields
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.line, copy.reason, str(copy)) == (err.path, err.line, err.reason, str(err))


def test_invalid_utf8_is_a_bad_row(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"ok\tfine\nbad\t\xff\xfe\n")
    tsv = TSVFile(path)
    assert tsv[0] == ["ok", "fine"]
    with pytest.raises(BadRowError, match="line 2: not valid UTF-8"):
        tsv[1]


def test_missing_file_names_the_path_and_data_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.tsv.*--data"):
        TSVFile(tmp_path / "nope.tsv")


@pytest.mark.parametrize("cols", ["0,-1", "0,x", [-2]])
def test_invalid_selected_cols(tmp_path, cols):
    with pytest.raises(ValueError, match="--selected-cols"):
        TSVFile(_write(tmp_path / "d.tsv", "a\tb\n"), selected_cols=cols)


def test_selected_col_beyond_the_first_row_names_the_flag(tmp_path):
    tsv = TSVFile(_write(tmp_path / "d.tsv", "a\tb\nc\td\n"), selected_cols="0,5")
    with pytest.raises(ValueError, match="--selected-cols 0,5 selects column 5 .* only 2 columns"):
        len(tsv)


def test_pickle_drops_the_handle_and_reopens(tmp_path):
    tsv = TSVFile(_write(tmp_path / "d.tsv", _tsv_text(ROWS)), selected_cols="1")
    assert tsv[0] == ["naïve café"]  # opens the handle
    copy = pickle.loads(pickle.dumps(tsv))
    assert copy._fh is None
    assert [copy[i] for i in range(4)] == [[r[1]] for r in ROWS]
    tsv.close()
    assert tsv[3] == ["last"]  # reopens after close


# ---- parse_data_paths -----------------------------------------------------------------------------------


def test_parse_data_paths_rotates_train_files_and_keeps_the_last_for_validation():
    data = "t1.tsv,t2.tsv,t3.tsv,valid.tsv"
    assert [parse_data_paths(data, "train", e) for e in range(1, 8)] == [
        "t1.tsv", "t2.tsv", "t3.tsv", "t1.tsv", "t2.tsv", "t3.tsv", "t1.tsv"
    ]  # fmt: skip
    assert parse_data_paths(data, "valid", 3) == "valid.tsv"
    assert parse_data_paths(data, "test", 1) == "valid.tsv"
    assert parse_data_paths("train.tsv,valid.tsv", "train", 5) == "train.tsv"
    assert parse_data_paths("only.tsv", "train", 2) == parse_data_paths("only.tsv", "valid", 1) == "only.tsv"
    with pytest.raises(ValueError):
        parse_data_paths("a.tsv,,b.tsv", "train", 1)
    with pytest.raises(ValueError):
        parse_data_paths("a.tsv", "train", 0)


# ---- epoch_batches --------------------------------------------------------------------------------------

SHARDING_CASES = [(10, 3, 1), (10, 3, 2), (17, 4, 3), (7, 4, 4), (24, 3, 4), (1, 5, 3), (0, 2, 2), (9, 1, 2)]


@pytest.mark.parametrize("num_rows,batch_size,world", SHARDING_CASES)
def test_ranks_cover_every_row_once_with_equal_batch_counts(num_rows, batch_size, world):
    per_rank = [epoch_batches(num_rows, batch_size, epoch=3, seed=7, rank=r, world_size=world) for r in range(world)]
    num_global = -(-num_rows // (batch_size * world))
    assert all(len(b) == num_global for b in per_rank)
    rows = [i for batches in per_rank for batch in batches for i in batch]
    assert sorted(rows) == list(range(num_rows))
    assert all(len(batch) <= batch_size for batches in per_rank for batch in batches)
    # only the last global batch can be short; full-size sub-batches come first in it
    for g in range(num_global - 1):
        assert all(len(per_rank[r][g]) == batch_size for r in range(world))


def test_short_last_global_batch_gives_trailing_ranks_empty_batches():
    per_rank = [epoch_batches(10, 3, epoch=1, seed=0, rank=r, world_size=3, shuffle=False) for r in range(3)]
    assert per_rank == [[[0, 1, 2], [9]], [[3, 4, 5], []], [[6, 7, 8], []]]


def test_shuffle_is_seeded_per_epoch():
    first = epoch_batches(50, 4, epoch=1, seed=123)
    assert first == epoch_batches(50, 4, epoch=1, seed=123)
    assert first != epoch_batches(50, 4, epoch=2, seed=123)
    assert first != epoch_batches(50, 4, epoch=1, seed=124)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(124)).tolist()
    assert [i for b in first for i in b] == expected
    assert [i for b in epoch_batches(50, 4, epoch=1, seed=0, shuffle=False) for i in b] == list(range(50))


@pytest.mark.parametrize("num_rows,batch_size", [(20, 3), (24, 3), (7, 2), (2, 4)])
def test_two_ranks_match_one_rank_with_two_accumulation_steps(num_rows, batch_size):
    single = epoch_batches(num_rows, batch_size, epoch=4, seed=11)
    ranks = [epoch_batches(num_rows, batch_size, epoch=4, seed=11, rank=r, world_size=2) for r in range(2)]
    for g in range(len(ranks[0])):
        micro = single[2 * g : 2 * g + 2]
        # the same micro-batches, not just the same rows: rank r's batch is micro-batch r of the update
        # a rank past the end of the short last update gets an empty batch, where one process gets none
        assert [ranks[0][g], ranks[1][g]] == micro + [[]] * (2 - len(micro))
    assert len(single) in (2 * len(ranks[0]), 2 * len(ranks[0]) - 1)


def test_drop_last_drops_the_incomplete_global_batch():
    per_rank = [epoch_batches(10, 3, epoch=2, seed=5, rank=r, world_size=2, drop_last=True) for r in range(2)]
    assert [len(b) for b in per_rank] == [1, 1]
    assert all(len(batch) == 3 for batches in per_rank for batch in batches)
    full = epoch_batches(10, 3, epoch=2, seed=5, rank=0, world_size=2)
    assert per_rank[0] == full[:1]


def test_epoch_batches_rejects_bad_arguments():
    with pytest.raises(ValueError):
        epoch_batches(10, 0, epoch=1, seed=0)
    with pytest.raises(ValueError):
        epoch_batches(10, 2, epoch=1, seed=0, rank=2, world_size=2)


# ---- DataLoader workers ---------------------------------------------------------------------------------


class _RowDataset(torch.utils.data.Dataset):
    def __init__(self, tsv: TSVFile) -> None:
        self.tsv = tsv

    def __len__(self) -> int:
        return len(self.tsv)

    def __getitem__(self, i: int) -> tuple[int, list[str], int, int]:
        row = self.tsv[i]
        return i, row, os.getpid(), self.tsv._pid


class _BadRowDataset(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> None:
        raise BadRowError("d.tsv", 9, "expected at least 5 columns, got 3")


def test_bad_row_error_keeps_its_type_through_a_dataloader_worker():
    # torch re-raises a worker's exception as type(err)(text); a trainer can still catch BadRowError
    loader = torch.utils.data.DataLoader(_BadRowDataset(), batch_size=1, num_workers=1)
    with pytest.raises(BadRowError, match="d.tsv at line 9: expected at least 5 columns") as info:
        next(iter(loader))
    assert info.value.path is None and "d.tsv at line 9" in info.value.reason


def test_dataloader_workers_read_correct_rows_with_their_own_handles(tmp_path):
    rows = [[str(i), f"text {i} " + "é" * (i % 7), "x" * (i % 13)] for i in range(97)]
    tsv = TSVFile(_write(tmp_path / "d.tsv", _tsv_text(rows)), selected_cols="2,0")
    assert tsv[5] == [rows[5][2], "5"]  # the parent opens a handle before the workers fork
    batches = epoch_batches(len(tsv), 4, epoch=1, seed=3)
    loader = torch.utils.data.DataLoader(
        _RowDataset(tsv),
        batch_sampler=batches,
        num_workers=2,
        collate_fn=list,
        multiprocessing_context="fork",
    )
    seen = [item for batch in loader for item in batch]
    assert sorted(i for i, *_ in seen) == list(range(97))
    assert all(row == [rows[i][2], rows[i][0]] for i, row, *_ in seen)
    worker_pids = {pid for *_, pid, _ in seen}
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert all(handle_pid == pid for *_, pid, handle_pid in seen)
