"""Builders for the reliability tests: rows of every task with one defect, hostile images and checkpoints,
and a criterion wrapper that injects NaN/inf losses and gradients."""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from data.images import encode_image_base64
from tests.conftest import BPE_DIR, random_image_b64
from tests.tasks.test_image_classify import CLASSES
from utils.cli import run_cli

NON_UTF8 = "@@NON_UTF8@@"  # replaced by invalid UTF-8 bytes when the row is written


# ---------------------------------------------------------------------------------------------- images
def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels but holds almost no data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * (width + 1))  # one row; the rest is "truncated"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def mode_image(mode: str, size: tuple[int, int] = (24, 20)) -> Image.Image:
    """A test image in PIL mode ``mode`` (``I;16``: 16-bit greyscale ramp over the whole 16-bit range)."""
    width, height = size
    if mode == "I;16":
        ramp = np.linspace(0, 65535, width * height).reshape(height, width).astype(np.uint16)
        return Image.fromarray(ramp)
    rgb = np.random.RandomState(0).randint(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(rgb).convert(mode)


def mode_image_b64(mode: str) -> str:
    image = mode_image(mode)
    return encode_image_base64(image, format="JPEG" if mode == "CMYK" else "PNG")


# ---------------------------------------------------------------------------------------------- task rows
@dataclass(frozen=True)
class Layout:
    """A task's file row: which columns ``--selected-cols`` reads, where the image/text/target are."""

    cols: str
    image: int | None
    text: int | None
    target: int
    empty_target: str = ""
    extra: tuple[tuple[str, str], ...] = ()


def good_row(task: str, i: int, rng: np.random.RandomState) -> list[str]:
    """Row ``i`` of ``task`` in its original file layout, with a fresh random 48 x 40 image."""
    image = random_image_b64(rng)
    rows = {
        "caption": [str(i), str(i), "a red square on the table", "none", image],
        "vqa_gen": [str(i), str(i), "what is it", "1.0|!+yes&&0.5|!+no", "cat&&dog", image],
        "refcoco": [str(i), str(i), "the dog on the left", "2,3,30,25", image],
        "snli_ve": [str(i), str(i), image, "a dog runs", "two dogs run in the park", "entailment"],
        "gigaword": [f"the big dog runs in the park number {i}", "dog runs"],
        "sst2": [f"a charming and often affecting journey number {i}", "1"],
        "image_classify": [image, "3", "tabby cat"],
    }
    return rows[task]


LAYOUTS = {
    "caption": Layout("0,4,2", image=4, text=2, target=2),
    "vqa_gen": Layout("0,5,2,3,4", image=5, text=2, target=3, empty_target="1.0|!+"),
    "refcoco": Layout("0,4,2,3", image=4, text=2, target=3),
    "snli_ve": Layout("0,2,3,4,5", image=2, text=3, target=5),
    "gigaword": Layout("0,1", image=None, text=0, target=1),
    "sst2": Layout("0,1", image=None, text=0, target=1),
    "image_classify": Layout("0,2", image=0, text=None, target=2, extra=(("ans2label_dict", json.dumps(CLASSES)),)),
}
# the defects every task reads, and those of tasks with an image / a box
ROW_KINDS = ("non_utf8", "truncated_row", "wrong_column_count", "empty_target")
IMAGE_KINDS = ("corrupt_base64", "decompression_bomb", "bomb_warning_range", "not_an_image")
BOX_KINDS = ("box_outside_image", "box_inverted")


def bad_row(task: str, kind: str, row: list[str]) -> str:
    """The TSV line of ``row`` with the defect ``kind`` (``NON_UTF8`` marks bytes to corrupt when written)."""
    layout, row = LAYOUTS[task], list(row)
    if kind == "non_utf8":
        row[layout.text if layout.text is not None else layout.target] += NON_UTF8
    elif kind == "truncated_row":  # cut inside the column before the last one that is read: columns are missing
        last = max(int(c) for c in layout.cols.split(","))
        return "\t".join(row)[: len("\t".join(row[:last])) - 1]
    elif kind == "wrong_column_count":
        del row[1]
    elif kind == "empty_target":
        row[layout.target] = layout.empty_target
    elif kind in ("corrupt_base64", "decompression_bomb", "bomb_warning_range", "not_an_image"):
        row[layout.image] = {
            "corrupt_base64": "not*base64!",
            "decompression_bomb": b64(png_header_only(20000, 20000)),  # 4e8 pixels: PIL's DecompressionBombError
            "bomb_warning_range": b64(png_header_only(10000, 10000)),  # 1e8: PIL would only warn, then decode
            "not_an_image": b64(b"GIF89a but not really an image"),
        }[kind]
    elif kind == "box_outside_image":
        row[layout.target] = "10,10,300,400"  # the images are 48 x 40
    elif kind == "box_inverted":
        row[layout.target] = "30,25,2,3"
    else:
        raise ValueError(kind)
    return "\t".join(row)


def write_rows(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(data.replace(NON_UTF8.encode(), b"\xff\xfe\xfa"))
    return path


def build_task(task: str, path: Path, tokenizer=None, **values):
    from tasks.base import TASKS

    layout, entry = LAYOUTS[task], TASKS.get(task)
    cfg = entry.config(data=str(path), selected_cols=layout.cols, bpe_dir=str(BPE_DIR), patch_image_size=32,
                       **dict(layout.extra), **values)  # fmt: skip
    return entry.cls(cfg, tokenizer)


def caption_lines(kinds: list[str], good: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Caption TSV lines: ``good`` good rows with the bad ones interleaved; returns (lines, ids of good rows)."""
    rng = np.random.RandomState(seed)
    lines, good_ids = [], []
    for i in range(good + len(kinds)):
        row = good_row("caption", i, rng)
        if i % 2 == 1 and (i // 2) < len(kinds):
            lines.append(bad_row("caption", kinds[i // 2], row))
        else:
            lines.append("\t".join(row))
            good_ids.append(str(i))
    return lines, good_ids


# ---------------------------------------------------------------------------------------------- checkpoints
class Payload:
    """Pickles as a call to ``os.system``: loading it with plain ``torch.load`` would run the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class InnocentLooking:
    """An ordinary class that no OFA checkpoint holds: refused as an unexpected global."""

    def __init__(self):
        self.value = 1


def hostile_checkpoint(path: Path, kind: str, marker: Path, base: dict | None = None) -> Path:
    """A real checkpoint (``base``) or a minimal one, with a code-running payload or an unexpected class."""
    ckpt = dict(base) if base is not None else {"args": None, "cfg": {"model": None}, "model": {}}
    extra = dict(ckpt.get("extra_state") or {})
    extra["x"] = Payload(f"touch {marker}") if kind == "code" else InnocentLooking()
    ckpt["extra_state"] = extra
    torch.save(ckpt, path)
    return path


# ---------------------------------------------------------------------------------------------- numerics
class FaultyCriterion(nn.Module):
    """Wraps a criterion; on the calls listed in ``plan`` (0-based) makes the loss NaN or the gradient inf."""

    def __init__(self, inner: nn.Module, plan: dict[int, str]):
        super().__init__()
        self.inner, self.plan, self.calls = inner, plan, 0
        self.log_keys = getattr(inner, "log_keys", ("loss", "nll_loss", "ntokens", "nsentences", "sample_size"))

    def forward(self, model, sample, update_num: int = 0):
        loss, sample_size, log = self.inner(model, sample, update_num=update_num)
        fault, self.calls = self.plan.get(self.calls), self.calls + 1
        if fault == "nan_loss":
            loss = loss * float("nan")
            log = {**log, "loss": float("nan")}
        elif fault == "inf_grad":  # the loss stays finite; every gradient becomes inf/NaN
            loss.register_hook(lambda grad: grad * float("inf"))
        return loss, sample_size, log


def read_log(save_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (save_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]


def finite_weights(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def cli_error(capsys, prog: str, main, argv: list[str]) -> str:
    """Run a command line in-process; assert it failed without a traceback and return its one-line error."""
    try:
        code = run_cli(prog, main, argv)
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code not in (0, None) and "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error: "), last
    return last
