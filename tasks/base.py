"""Task base class and registry (OFA's ``OFATask``, spec §3-§4).

A task turns TSV rows into model batches and validation metrics. Subclasses implement ``build_sample`` (one
row -> one sample dict of tensors) and may override ``collate``, ``valid_step`` and ``reduce_metrics``.
Shared here: the common task settings (OFA's ``OFAConfig`` fields), the tokenizer, text helpers that
reproduce OFA's ``encode_text``/``pre_caption``, the image transform, and the dataset wrapper that reads
rows lazily and reports bad rows with file and line.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms

from data.collate import collate_tokens
from data.images import decode_base64_image
from data.tokenizer import OFATokenizer
from data.tsv import BadRowError, TSVFile, parse_data_paths
from models.generate import GenerationConfig, SequenceGenerator
from utils.registry import Registry

logger = logging.getLogger(__name__)

TASKS = Registry("task")

OFA_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class TaskConfig:
    """Settings every OFA task has (``OFAConfig`` in the original ``tasks/ofa_task.py``)."""

    data: str = field(default="", metadata={"help": "comma-separated TSV files; the last one is the validation set"})
    selected_cols: str | None = field(default=None, metadata={"help": "columns to read, e.g. 0,4,2"})
    bpe_dir: str | None = field(default=None, metadata={"help": "folder with encoder.json, vocab.bpe, dict.txt"})
    tokenizer_json: str | None = field(default=None, metadata={"help": "own tokenizers-library tokenizer.json"})
    max_source_positions: int = 1024
    max_target_positions: int = 1024
    max_src_length: int = 128
    max_tgt_length: int = 30
    code_dict_size: int = 8192
    num_bins: int = 1000
    patch_image_size: int = 480
    orig_patch_image_size: int = 256
    imagenet_default_mean_and_std: bool = False
    constraint_range: str | None = None


def build_tokenizer(cfg: TaskConfig) -> OFATokenizer:
    if cfg.tokenizer_json:
        return OFATokenizer.from_tokenizer_json(cfg.tokenizer_json, cfg.code_dict_size, cfg.num_bins)
    if not cfg.bpe_dir:
        raise ValueError(
            "--bpe-dir is required: the folder holding OFA's encoder.json, vocab.bpe and dict.txt "
            "(OFA's utils/BPE/), or pass --tokenizer-json for your own tokenizer"
        )
    return OFATokenizer.from_bpe_dir(cfg.bpe_dir, cfg.code_dict_size, cfg.num_bins)


def pre_caption(text: str, max_words: int | None = None, *, person: bool = True) -> str:
    """OFA's ``pre_caption``/``pre_question`` normalisation (lower case, punctuation trims, word limit)."""
    text = text.lower().lstrip(",.!?*#:;~").replace("-", " ").replace("/", " ")
    if person:
        text = text.replace("<person>", "person")
    text = re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")
    words = text.split(" ")
    if max_words is not None and len(words) > max_words:
        text = " ".join(words[:max_words])
    return text


def int_or_str(value: str) -> int | str:
    """Sample ids as the original writes them in prediction files: integers when they are numbers."""
    return int(value) if str(value).isdigit() else value


def image_transform(size: int, imagenet_mean_std: bool = False):
    """Resize to size x size (aspect ratio not kept, PIL bicubic) -> tensor -> normalise, as OFA."""
    mean, std = IMAGENET_MEAN_STD if imagenet_mean_std else OFA_MEAN_STD
    return transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean=mean, std=std),
        ]
    )


class Task:
    """Base task: subclasses set ``build_sample`` and register with ``@TASKS.register(name, Config)``."""

    passthrough_keys: tuple[str, ...] = ()

    def __init__(self, cfg: TaskConfig, tokenizer: OFATokenizer | None = None):
        self.cfg = cfg
        self.tokenizer = tokenizer or build_tokenizer(cfg)
        self.bos, self.pad, self.eos = self.tokenizer.bos, self.tokenizer.pad, self.tokenizer.eos
        self.patch_transform = image_transform(cfg.patch_image_size, cfg.imagenet_default_mean_and_std)

    # ------------------------------------------------------------------ text and images
    def encode_text(
        self, text: str, length: int | None = None, bos: bool = False, eos: bool = False, use_bpe: bool = True
    ) -> Tensor:
        return self.tokenizer.encode(text, add_bos=bos, add_eos=eos, length=length, use_bpe=use_bpe)

    def load_image(self, data: str) -> Tensor:
        image: Image.Image = decode_base64_image(data)
        return self.patch_transform(image)

    # ------------------------------------------------------------------ data
    def dataset(self, split: str, epoch: int = 1) -> TaskDataset:
        path = parse_data_paths(self.cfg.data, split, epoch)
        return TaskDataset(self, TSVFile(path, self.cfg.selected_cols), split)

    def build_sample(self, row: list[str], split: str, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """OFA's standard collater: right-padded tokens, stacked images, ntokens = target tokens."""
        if not samples:
            return {}
        pad = self.pad
        source = collate_tokens([s["source"] for s in samples], pad)
        batch: dict[str, Any] = {
            "id": [s["id"] for s in samples],
            "nsentences": len(samples),
            "net_input": {"src_tokens": source, "src_lengths": source.ne(pad).sum(1)},
        }
        if "patch_image" in samples[0]:
            batch["net_input"]["patch_images"] = torch.stack([s["patch_image"] for s in samples])
            batch["net_input"]["patch_masks"] = torch.tensor([bool(s["patch_mask"]) for s in samples])
        if samples[0].get("target") is not None:
            target = collate_tokens([s["target"] for s in samples], pad)
            batch["target"] = target
            batch["ntokens"] = int(target.ne(pad).sum())
            batch["net_input"]["prev_output_tokens"] = collate_tokens([s["prev_output_tokens"] for s in samples], pad)
        else:
            batch["ntokens"] = int(source.ne(pad).sum())
        for key in self.passthrough_keys:  # per-sample values the task's evaluation needs
            if key in samples[0]:
                batch[key] = [s[key] for s in samples]
        return batch

    # ------------------------------------------------------------------ evaluation
    metric_name = "score"  # the name OFA logs the task metric under

    def eval_enabled(self) -> bool:
        """Whether validation during training also generates and scores (e.g. --eval-cider)."""
        return False

    def default_generation(self) -> GenerationConfig:
        return GenerationConfig.from_args(getattr(self.cfg, "eval_args", "{}") or "{}")

    def build_generator(self, gen_cfg: GenerationConfig | None = None) -> SequenceGenerator:
        gen_cfg = gen_cfg or self.default_generation()
        if self.cfg.constraint_range and not gen_cfg.constraint_range:
            gen_cfg = dataclasses.replace(gen_cfg, constraint_range=self.cfg.constraint_range)
        return SequenceGenerator(gen_cfg, len(self.tokenizer), constraint_trie=getattr(self, "trie", None))

    def eval_step(self, model, sample: dict, generator: SequenceGenerator | None = None, **options) -> list[dict]:
        """Per-sample predictions, each with ``score`` (its contribution to the task metric)."""
        raise NotImplementedError(f"task {type(self).__name__} has no evaluation")

    def eval_metrics(self, predictions: list[dict]) -> dict[str, float]:
        scores = [p["score"] for p in predictions]
        return {self.metric_name: round(sum(scores) / max(len(scores), 1), 4), "count": len(scores)}

    def prediction_records(self, predictions: list[dict]) -> list[dict]:
        """The original's prediction file rows (e.g. ``{"question_id", "answer"}`` for VQA)."""
        return [{k: v for k, v in p.items() if k != "score"} for p in predictions]

    # ------------------------------------------------------------------ validation during training
    def valid_step(self, model, criterion, sample: dict) -> tuple[Tensor, int, dict]:
        with torch.no_grad():
            loss, sample_size, log = criterion(model, sample)
            if self.eval_enabled():
                preds = self.eval_step(getattr(model, "module", model), sample)
                log["_score_sum"] = float(sum(p["score"] for p in preds))
                log["_score_cnt"] = len(preds)
        return loss, sample_size, log

    def reduce_metrics(self, logs: list[dict]) -> dict[str, float]:
        """Task metrics from the summed validation logs (the loss is reduced by the criterion)."""
        count = sum(float(lg.get("_score_cnt", 0)) for lg in logs)
        if not count:
            return {}
        return {self.metric_name: round(sum(float(lg.get("_score_sum", 0)) for lg in logs) / count, 4)}


class TaskDataset(torch.utils.data.Dataset):
    """Rows of one TSV file turned into samples by the task; bad rows raise ``BadRowError`` with file/line."""

    def __init__(self, task: Task, table: TSVFile, split: str):
        self.task, self.table, self.split = task, table, split

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.table[index]
        try:
            return self.task.build_sample(row, self.split, index)
        except BadRowError:
            raise
        except (ValueError, IndexError, KeyError) as err:
            raise BadRowError(self.table.path, self.table.line_number(index), str(err)) from err
