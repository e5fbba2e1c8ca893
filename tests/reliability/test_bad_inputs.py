"""Bad inputs, the matrix of docs/TROUBLESHOOTING.md: every task's dataset, train.py, evaluate.py, predict.py and
the converters either stop with one line naming the file and line (or the flag), or, with --skip-bad-rows N,
skip and count the bad rows without losing or repeating a good one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import predict
import train
from data import convert
from data.images import decode_base64_image
from data.tokenizer import OFATokenizer
from data.tsv import BadRowError
from tasks.base import Task
from tests.conftest import BPE_DIR
from tests.reliability.helpers import (
    BOX_KINDS,
    IMAGE_KINDS,
    LAYOUTS,
    ROW_KINDS,
    bad_row,
    build_task,
    caption_lines,
    cli_error,
    good_row,
    mode_image,
    mode_image_b64,
    png_header_only,
    read_log,
    write_rows,
)
from tests.test_trainer import _argv

MATRIX = [
    (task, kind)
    for task, layout in LAYOUTS.items()
    for kind in ROW_KINDS + (IMAGE_KINDS if layout.image is not None else ()) + (BOX_KINDS if task == "refcoco" else ())
]
MODES = ("L", "CMYK", "RGBA", "LA", "P", "I;16")  # greyscale, CMYK JPEG, alpha, palette, 16-bit
CAPTION_KINDS = list(ROW_KINDS + IMAGE_KINDS)  # eight kinds, one row each


@pytest.fixture(scope="module")
def tokenizer(bpe_dir):
    return OFATokenizer.from_bpe_dir(bpe_dir)


@pytest.fixture(scope="module")
def mixed_tsv(tmp_path_factory) -> tuple[Path, list[str]]:
    """A caption TSV of 8 good rows with one row of every caption defect between them; and the good ids."""
    lines, good_ids = caption_lines(CAPTION_KINDS, good=8)
    return write_rows(tmp_path_factory.mktemp("mixed") / "mixed.tsv", lines), good_ids


# ---------------------------------------------------------------------------------------------- datasets
@pytest.mark.parametrize("task,kind", MATRIX)
def test_every_task_names_the_file_and_line_of_a_bad_row(task, kind, tokenizer, tmp_path):
    rng = np.random.RandomState(0)
    rows = [good_row(task, i, rng) for i in range(4)]
    lines = ["\t".join(row) for row in rows]
    lines[2] = bad_row(task, kind, rows[2])
    path = write_rows(tmp_path / "data.tsv", lines)
    dataset = build_task(task, path, tokenizer).dataset("train")
    for good in (0, 1, 3):
        assert dataset[good]["target"].numel() > 0
    with pytest.raises(BadRowError) as err:
        dataset[2]
    assert (err.value.path, err.value.line) == (str(path), 3)
    assert str(err.value).startswith(f"bad row in {path} at line 3: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["non_utf8", "truncated_row", "wrong_column_count"])
def test_a_bad_first_row_is_a_bad_row_not_a_wrong_flag(kind, tokenizer, tmp_path):
    rng = np.random.RandomState(0)
    rows = [good_row("caption", i, rng) for i in range(3)]
    path = write_rows(tmp_path / "data.tsv", [bad_row("caption", kind, rows[0]), *("\t".join(r) for r in rows[1:])])
    dataset = build_task("caption", path, tokenizer).dataset("train")
    with pytest.raises(BadRowError, match=f"^bad row in {path} at line 1: "):
        dataset[0]
    assert dataset[1]["target"].numel() > 0


@pytest.mark.parametrize("mode", MODES)
def test_greyscale_cmyk_alpha_palette_and_16_bit_images_are_read_as_rgb(mode, tokenizer, tmp_path):
    image = decode_base64_image(mode_image_b64(mode))
    assert image.mode == "RGB" and image.size == (24, 20)
    if mode == "I;16":  # a full 16-bit ramp keeps its gradient (PIL's own conversion clips it to white)
        values = np.asarray(image)[..., 0].ravel()
        assert values[0] == 0 and values[-1] == 255 and 100 < values.mean() < 155
    row = good_row("caption", 0, np.random.RandomState(0))
    row[4] = mode_image_b64(mode)
    sample = build_task("caption", write_rows(tmp_path / "modes.tsv", ["\t".join(row)]), tokenizer).dataset("train")[0]
    assert sample["patch_image"].shape == (3, 32, 32) and torch.isfinite(sample["patch_image"]).all()


# ---------------------------------------------------------------------------------------------- train.py
@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
@pytest.mark.parametrize("num_workers", ["0", "1"])
def test_train_stops_with_one_line_naming_file_and_line(num_workers, tmp_path, capsys):
    rng = np.random.RandomState(0)
    rows = [good_row("caption", i, rng) for i in range(4)]
    lines = ["\t".join(row) for row in rows]
    lines[2] = bad_row("caption", "corrupt_base64", rows[2])
    data = write_rows(tmp_path / "train.tsv", lines)
    argv = _argv(f"{data},{data}", tmp_path / "ckpt", "--max-update", "1", "--num-workers", num_workers)
    line = cli_error(capsys, "train.py", train.main, argv)  # batch size 4: the first batch holds the bad row
    assert line == f"train.py: error: bad row in {data} at line 3: not base64 (invalid characters or length)"


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
def test_skip_bad_rows_counts_them_and_trains_on_every_good_row_once(mixed_tsv, tmp_path, monkeypatch):
    data, good_ids = mixed_tsv
    seen: list[str] = []
    collate = Task.collate

    def recording_collate(self, samples):
        seen.extend(s["id"] for s in samples)
        return collate(self, samples)

    monkeypatch.setattr(Task, "collate", recording_collate)
    flags = ("--max-epoch", "1", "--batch-size", "8", "--disable-validation", "--no-save", "--skip-bad-rows", "8")
    assert train.main(_argv(f"{data},{data}", tmp_path, *flags)) == 0
    assert sorted(seen, key=int) == good_ids  # none lost, none twice
    log = read_log(tmp_path)
    assert sum(x["nsentences"] for x in log) == len(good_ids) and log[-1]["bad_rows"] == len(CAPTION_KINDS)


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
def test_batches_of_bad_rows_only_train_nothing(tmp_path):
    rng = np.random.RandomState(0)
    kinds = ("empty_target", "corrupt_base64", "non_utf8", "truncated_row")  # the first rows have all columns
    lines = [bad_row("caption", kind, good_row("caption", i, rng)) for i, kind in enumerate(kinds)]
    data = write_rows(tmp_path / "bad.tsv", lines)
    flags = ("--max-epoch", "2", "--disable-validation", "--no-save", "--skip-bad-rows", "8")
    assert train.main(_argv(f"{data},{data}", tmp_path, *flags)) == 0  # two epochs of one all-bad batch
    assert not (tmp_path / "train_log.jsonl").read_text()  # no update was made or logged


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
def test_more_bad_rows_than_allowed_stop_the_run(mixed_tsv, tmp_path, capsys):
    data, _ = mixed_tsv
    flags = ("--max-epoch", "1", "--batch-size", "16", "--disable-validation", "--skip-bad-rows", "7")
    argv = _argv(f"{data},{data}", tmp_path, *flags)  # one batch holds every row
    line = cli_error(capsys, "train.py", train.main, argv)
    assert line.endswith("8 malformed rows were skipped, more than --skip-bad-rows 7: fix the data or raise the limit")


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
@pytest.mark.parametrize("which", ["missing", "zero-byte"])
def test_missing_or_empty_data_file_is_named(which, caption_data, tmp_path, capsys):
    data = tmp_path / "train.tsv"
    if which == "zero-byte":
        data.write_bytes(b"")
    valid = caption_data.split(",")[1]
    line = cli_error(capsys, "train.py", train.main, _argv(f"{data},{valid}", tmp_path / "ckpt", "--max-update", "1"))
    expected = "does not exist" if which == "missing" else "has no rows"
    assert str(data) in line and expected in line


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--task", "captoin"], "argument --task: invalid choice: 'captoin'"),
        (["--arch", "ofa_tset"], "argument --arch: invalid choice: 'ofa_tset'"),
        (["--criterion", "label_smoothing"], "argument --criterion: invalid choice: 'label_smoothing'"),
        (["--lr-rate", "1e-4"], "unrecognized arguments: --lr-rate (did you mean"),
        (["--max-epochs", "3"], "unrecognized arguments: --max-epochs (did you mean --max-epoch"),
        (["--batch-size", "four"], "argument --batch-size: --batch-size expects a number, got 'four'"),
    ],
)
def test_train_names_an_unknown_name_or_misspelt_flag(flags, expected, caption_data, tmp_path, capsys):
    argv = _argv(caption_data, tmp_path, "--max-update", "1") + flags
    assert expected in cli_error(capsys, "train.py", train.main, argv)


# ---------------------------------------------------------------------------------------------- evaluate.py
def _evaluate_argv(data: Path, ckpt: Path, results: Path, *extra: str) -> list[str]:
    return [str(data), "--path", str(ckpt), "--bpe-dir", str(BPE_DIR), "--selected-cols", "0,4,2",
            "--results-path", str(results), "--beam", "1", "--max-len-b", "3", "--batch-size", "4", *extra]  # fmt: skip


def test_evaluate_stops_at_a_bad_row_or_skips_and_counts(mixed_tsv, caption_ckpt, tmp_path, capsys):
    data, good_ids = mixed_tsv
    line = cli_error(capsys, "evaluate.py", evaluate.main, _evaluate_argv(data, caption_ckpt, tmp_path))
    assert line.startswith(f"evaluate.py: error: bad row in {data} at line 2: ")
    assert evaluate.main(_evaluate_argv(data, caption_ckpt, tmp_path, "--skip-bad-rows", "7")) == 0
    ids = [str(p["image_id"]) for p in json.loads((tmp_path / "test_predict.json").read_text())]
    empty_target = str(2 * CAPTION_KINDS.index("empty_target") + 1)  # only a training row needs a target
    assert ids == sorted([*good_ids, empty_target], key=int)  # every good row once, in file order
    assert json.loads((tmp_path / "test_metrics.json").read_text())["skipped_bad_rows"] == len(CAPTION_KINDS) - 1


@pytest.mark.parametrize(
    "flags,expected",
    [(["--task", "captoin"], "unknown --task 'captoin'"), (["--beem", "5"], "--beem (did you mean --beam")],
)
def test_evaluate_names_an_unknown_task_or_misspelt_flag(flags, expected, caption_data, caption_ckpt, tmp_path, capsys):
    argv = _evaluate_argv(Path(caption_data.split(",")[1]), caption_ckpt, tmp_path, *flags)
    assert expected in cli_error(capsys, "evaluate.py", evaluate.main, argv)


# ---------------------------------------------------------------------------------------------- predict.py
def test_predict_reads_every_image_mode(caption_ckpt, tmp_path, capsys):
    paths = []
    for i, mode in enumerate(MODES):
        paths.append(tmp_path / f"{i}.{'jpg' if mode == 'CMYK' else 'png'}")
        mode_image(mode).save(paths[-1])
    assert predict.main(["--path", str(caption_ckpt), "--task", "caption", *map(str, paths)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in paths] and all("caption" in r for r in records)


@pytest.mark.parametrize("kind", ["zero-byte", "decompression bomb", "misspelt flag"])
def test_predict_bad_input_is_one_line(kind, caption_ckpt, tmp_path, capsys):
    image = tmp_path / "input.png"
    image.write_bytes({"zero-byte": b"", "decompression bomb": png_header_only(20000, 20000)}.get(kind, b""))
    argv = ["--path", str(caption_ckpt), "--task", "caption", str(image)]
    if kind == "misspelt flag":
        argv += ["--beem", "3"]
    line = cli_error(capsys, "predict.py", predict.main, argv)
    assert ("--beem" if kind == "misspelt flag" else f"cannot read image {image}") in line
    assert kind != "decompression bomb" or "DecompressionBombError" in line


# ---------------------------------------------------------------------------------------------- converters
def test_converter_skips_and_counts_bad_images_and_entries(tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    for i, mode in enumerate(MODES):  # good, in every mode
        mode_image(mode).save(images / f"{i}.{'jpg' if mode == 'CMYK' else 'png'}")
    (images / "zero.jpg").write_bytes(b"")
    (images / "garbage.jpg").write_bytes(b"\x00" * 100)
    (images / "bomb.png").write_bytes(png_header_only(20000, 20000))
    names = [f"{i}.{'jpg' if m == 'CMYK' else 'png'}" for i, m in enumerate(MODES)]
    names += ["zero.jpg", "garbage.jpg", "bomb.png", "missing.png"]
    labels = tmp_path / "labels.csv"
    labels.write_text("file,caption\n" + "".join(f"{n},a picture\n" for n in names) + "6.png,\n", encoding="utf-8")
    out = tmp_path / "out.tsv"
    argv = ["folder", "--images", str(images), "--labels", str(labels), "--task", "caption", "--out", str(out)]
    assert convert.main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary == f"wrote 6 rows to {out} (skipped 5: malformed entry 1, missing image 1, unreadable image 3)"
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert [r[1] for r in rows] == [str(i) for i in range(6)]
    assert all(decode_base64_image(r[4]).mode == "RGB" for r in rows)
    assert convert.main([*argv, "--strict"]) == 1
    err = capsys.readouterr().err.strip().split("\r")[-1]  # after the progress bar
    assert err.startswith("error: labels.csv row 7 (zero.jpg): ") and err.endswith("(--strict)") and "\n" not in err


@pytest.mark.parametrize(
    "fmt,content,reason",
    [
        ("coco-captions", b"", "Expecting value"),  # zero-byte
        ("coco-captions", b'{"images": "caf\xe9"}', "'utf-8' codec can't decode"),
        ("snli-ve", b'{"x": "caf\xe9"}\n', "'utf-8' codec can't decode"),
        ("vqa", None, "No such file or directory"),
    ],
)
def test_converter_reports_unreadable_annotations_in_one_line(fmt, content, reason, tmp_path, capsys):
    annotations = tmp_path / "annotations.json"
    if content is not None:
        annotations.write_bytes(content)
    flag = {"coco-captions": "--annotations", "snli-ve": "--jsonl", "vqa": "--questions"}[fmt]
    argv = [fmt, flag, str(annotations), "--images", str(tmp_path), "--out", str(tmp_path / "out.tsv")]
    assert convert.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot read {annotations}: ") and reason in err and "\n" not in err


def test_converter_reports_unreadable_label_files_in_one_line(tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"file,caption\n0.png,caf\xe9\n")  # Latin-1, not UTF-8
    argv = [
        "folder",
        "--images",
        str(images),
        "--labels",
        str(labels),
        "--task",
        "caption",
        "--out",
        str(tmp_path / "o"),
    ]
    assert convert.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot read {labels}: 'utf-8' codec can't decode") and "\n" not in err
