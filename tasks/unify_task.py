"""OFA's pretraining task ``unify_task`` (spec §4.9, §3.2, §5.1): one stream mixing every pretraining example.

Inputs (the formats of OFA's ``pretrain_data_examples.zip``):

* ``--data``: ``vision_language_examples.tsv`` with ``uniq_id, image, caption, question, refs, gt_objects,
  dataset_name, type`` (``--selected-cols 0,1,2,3,4,5,6,7``). Several comma-separated files are all training
  files, one per epoch (``paths[(epoch - 1) % len(paths)]``), unlike the finetuning tasks.
* ``--text-data`` (``uniq_id, text``), ``--image-data`` (``uniq_id, image 2c x 2c, codes of the centre``),
  ``--detection-data`` (``uniq_id, image, "x0,y0,x1,y1,cat_id,cat_name&&..."``), each with its own
  ``--*-selected-cols``; any of them may be left out.
* ``--neg-sample-dir``: ``all_captions.txt``, ``object.txt``, ``type2ans.json`` (image-text-matching negatives).

Every image-text row gives its examples (``tasks.unify_examples``); in the train split every 8th row (file rows
8, 16, ... as the original's reader counts them) also brings 2 text rows, 1 image row and 1 detection row. The
collater puts the image-text examples in batch v1 and the others in batch v2 and returns the list ``[v1, v2]``
(the criterion samples ``--sample-patch-num`` patches of the v1 images and adds the two normalised losses); a
batch without v2 examples is a plain v1 batch, as in the original.

Differences from the original, on purpose: every row is built under python/numpy/torch generators seeded from
(``--seed``, ``--pretrain-seed``, epoch, row index), so the stream is reproducible and the same for any number of
DataLoader workers (the original seeded numpy with (pretrain_seed, epoch) only, the same for every row, and left
python's ``random`` and torch unseeded). Side rows are read by position instead of by a sequential reader: the
k-th mixing row of an epoch (k counted over the file, continuing across epochs) takes text rows 2k, 2k+1 and
image/detection row k, modulo their files' lengths, so ranks and workers that hold disjoint image-text rows also
read disjoint side rows while the side files last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from data.augment import seeded_rngs
from data.tsv import BadRowError, TSVFile
from tasks.base import TASKS, Task, TaskConfig
from tasks.unify_examples import Example, NegativeSamples, UnifyExamples

MIX_EVERY = 8  # one row in 8 brings text, image and detection examples
TEXT_ROWS = 2  # text rows per mixing row


@dataclass
class UnifyConfig(TaskConfig):
    max_image_size: int = field(default=512, metadata={"help": "boxes are binned relative to this size"})
    text_data: str | None = field(default=None, metadata={"help": "pure text TSV (text infilling)"})
    image_data: str | None = field(default=None, metadata={"help": "pure image TSV (image infilling)"})
    detection_data: str | None = field(default=None, metadata={"help": "detection TSV"})
    text_selected_cols: str | None = None
    image_selected_cols: str | None = None
    detection_selected_cols: str | None = None
    neg_sample_dir: str | None = field(
        default=None, metadata={"help": "folder with all_captions.txt, object.txt, type2ans.json (ITM negatives)"}
    )
    code_image_size: int = field(default=128, metadata={"help": "image infilling: images are 2x this size"})
    pretrain_seed: int = field(default=7, metadata={"help": "seeds every example's random choices (with --seed)"})
    mask_ratio: float = field(default=0.3, metadata={"help": "fraction of words masked in text infilling"})
    random_ratio: float = field(default=0.0, metadata={"help": "replace a mask by a random token this often"})
    keep_ratio: float = field(default=0.0, metadata={"help": "unused by the original; must stay 0"})
    mask_length: str = field(default="span-poisson", metadata={"choices": ["subword", "word", "span-poisson"]})
    poisson_lambda: float = 3.0
    replace_length: int = field(default=1, metadata={"help": "replace a masked span by 0, 1 or N tokens (-1)"})
    seed: int = field(default=1, metadata={"help": "random seed; also seeds every pretraining example"})


def _build(table: TSVFile, index: int, build: Callable[[list[str]], Any]) -> Any:
    """``build(row)`` for row ``index`` (modulo the file length); a bad row names its file and line."""
    index %= len(table)
    row = table[index]
    try:
        return build(row)
    except BadRowError:
        raise
    except (ValueError, IndexError, KeyError) as err:
        raise BadRowError(table.path, table.line_number(index), str(err)) from err


class UnifyDataset(torch.utils.data.Dataset):
    """One epoch of the pretraining stream: item ``i`` is ``{"v1": [examples], "v2": [examples]}``."""

    def __init__(self, task: UnifyTask, table: TSVFile, split: str, epoch: int):
        self.task, self.table, self.split, self.epoch = task, table, split, epoch

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, list[Example]]:
        cfg, examples = self.task.cfg, self.task.examples
        with seeded_rngs(cfg.seed, cfg.pretrain_seed, self.epoch, index):
            v1 = _build(self.table, index, lambda row: examples.image_text(row, self.split))
            mixing = self.split == "train" and (index + 1) % MIX_EVERY == 0
            v2 = self.side_examples(index) if mixing else []
        return {"v1": v1, "v2": v2}

    def side_examples(self, index: int) -> list[Example]:
        """The text, image and detection examples that come with image-text row ``index``."""
        slot = (self.epoch - 1) * (len(self.table) // MIX_EVERY) + index // MIX_EVERY
        tables, examples = self.task.side_tables, self.task.examples
        out = []
        if tables["text"] is not None:
            out += [_build(tables["text"], TEXT_ROWS * slot + k, examples.pure_text) for k in range(TEXT_ROWS)]
        if tables["image"] is not None:
            out.append(_build(tables["image"], slot, examples.pure_image))
        if tables["detection"] is not None:
            out.append(_build(tables["detection"], slot, examples.detection))
        return out


@TASKS.register("unify_task", UnifyConfig)
class UnifyTask(Task):
    def __init__(self, cfg: UnifyConfig, tokenizer=None):
        super().__init__(cfg, tokenizer)
        if cfg.keep_ratio != 0.0:
            raise ValueError("--keep-ratio is not implemented (the original's noise never reads it); leave it at 0")
        if not cfg.neg_sample_dir:
            raise ValueError("unify_task needs --neg-sample-dir (all_captions.txt, object.txt, type2ans.json)")
        self.examples = UnifyExamples(cfg, self.tokenizer, NegativeSamples.from_dir(cfg.neg_sample_dir))
        sources = {
            "text": (cfg.text_data, cfg.text_selected_cols),
            "image": (cfg.image_data, cfg.image_selected_cols),
            "detection": (cfg.detection_data, cfg.detection_selected_cols),
        }
        missing = [f"--{name}-data {path}" for name, (path, _) in sources.items() if path and not Path(path).is_file()]
        if missing:
            raise FileNotFoundError(f"unify_task: {', '.join(missing)} does not exist")
        self.side_tables = {name: TSVFile(path, cols) if path else None for name, (path, cols) in sources.items()}

    def dataset(self, split: str, epoch: int = 1) -> UnifyDataset:
        """Every path of ``--data`` is a training file, one per epoch; other splits read the same file."""
        paths = [p.strip() for p in self.cfg.data.split(",")]
        if not self.cfg.data.strip() or not all(paths):
            raise ValueError(f"--data {self.cfg.data!r} must be a comma-separated list of non-empty paths")
        if epoch < 1:
            raise ValueError(f"epochs are 1-based, got epoch {epoch}")
        table = TSVFile(paths[(epoch - 1) % len(paths)], self.cfg.selected_cols)
        return UnifyDataset(self, table, split, epoch)

    def collate(self, samples: list[dict[str, list[Example]]]) -> dict[str, Any] | list[dict[str, Any]]:
        """``[v1, v2]`` batches (image-text / text, image and detection), or v1 alone when v2 is empty."""
        v1 = [example for sample in samples for example in sample["v1"]]
        v2 = [example for sample in samples for example in sample["v2"]]
        if not v1:
            return {}
        return [self.collate_examples(v1), self.collate_examples(v2)] if v2 else self.collate_examples(v1)

    def collate_examples(self, examples: list[Example]) -> dict[str, Any]:
        batch = super().collate(examples)
        batch["conf"] = torch.tensor([e["conf"] for e in examples], dtype=torch.float)
        if "code_mask" in examples[0]:  # v2: image-infilling rows decode image codes
            batch["net_input"]["code_masks"] = torch.tensor([bool(e["code_mask"]) for e in examples])
        return batch
