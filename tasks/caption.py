"""Image captioning (OFA ``caption`` task, spec §4.1): prompt " what does the image describe?".

TSV columns after ``--selected-cols``: id, image (base64), caption. Training targets have punctuation
removed and keep the first ``--max-tgt-length`` words; validation rows may hold several references joined
by ``&&`` (kept for the metric; the first reference is the teacher-forcing target of the loss).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import torch

from tasks.base import TASKS, Task, TaskConfig

PROMPT = " what does the image describe?"
_NO_PUNCTUATION = str.maketrans({key: None for key in string.punctuation})


@dataclass
class CaptionConfig(TaskConfig):
    eval_cider: bool = False
    eval_bleu: bool = False
    eval_args: str = "{}"
    eval_print_samples: bool = False
    eval_cider_cached_tokens: str | None = None
    scst: bool = False
    scst_args: str = "{}"


@TASKS.register("caption", CaptionConfig)
class CaptionTask(Task):
    def build_sample(self, row: list[str], split: str, index: int) -> dict[str, Any]:
        if len(row) < 3:
            raise ValueError(f"expected 3 columns (id, image, caption) after --selected-cols, got {len(row)}")
        uniq_id, image, caption = row[:3]
        if split == "train" and not self.cfg.scst:
            words = caption.translate(_NO_PUNCTUATION).strip().split()
            target_text = " ".join(words[: self.cfg.max_tgt_length])
            references = [target_text]
        else:
            caption = " ".join(caption.strip().split())
            references = [ref.translate(_NO_PUNCTUATION).strip() for ref in caption.split("&&")]
            target_text = "&&".join(references)
        source = self.encode_text(PROMPT, bos=True, eos=True)
        target = self.encode_text(" " + target_text)
        return {
            "id": uniq_id,
            "source": source,
            "patch_image": self.load_image(image),
            "patch_mask": True,
            "target": torch.cat([target, torch.tensor([self.eos])]),
            "prev_output_tokens": torch.cat([torch.tensor([self.bos]), target]),
            "references": references,
        }
