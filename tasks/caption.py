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

from models.generate import GenerationConfig
from tasks.base import TASKS, Task, TaskConfig, int_or_str
from utils.metrics import CiderD, bleu

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
    metric_name = "cider"
    passthrough_keys = ("references",)

    def __init__(self, cfg: CaptionConfig, tokenizer=None):
        super().__init__(cfg, tokenizer)
        self.cider = CiderD(df=cfg.eval_cider_cached_tokens or "corpus")
        if cfg.scst and cfg.scst_args not in ("", "{}"):  # the SCST criterion samples with the task's generator
            self.scst_generator = self.build_generator(GenerationConfig.from_args(cfg.scst_args))

    def eval_enabled(self) -> bool:
        return self.cfg.eval_cider

    def eval_step(self, model, sample: dict, generator=None, **options) -> list[dict]:
        """Beam-search captions (OFA's eval_args), punctuation stripped; score = CIDEr-D within the batch."""
        model.eval()
        generator = generator or self.build_generator()
        hypos = generator.generate(model, sample)
        captions = [self.tokenizer.decode(h[0]["tokens"]).translate(_NO_PUNCTUATION).strip() for h in hypos]
        refs = {i: refs for i, refs in enumerate(sample["references"])}
        _, scores = self.cider.compute_score(refs, {i: [c] for i, c in enumerate(captions)})
        return [
            {"image_id": int_or_str(uid), "caption": cap, "references": ref, "score": float(score)}
            for uid, cap, ref, score in zip(sample["id"], captions, sample["references"], scores, strict=True)
        ]

    def eval_metrics(self, predictions: list[dict]) -> dict[str, float]:
        """Corpus-level CIDEr-D and BLEU-4 over every prediction (pycocoevalcap's definitions)."""
        gts = {i: p["references"] for i, p in enumerate(predictions)}
        res = {i: [p["caption"]] for i, p in enumerate(predictions)}
        cider, _ = CiderD(df="corpus").compute_score(gts, res) if predictions else (0.0, None)
        bleus, _ = bleu(gts, res) if predictions else ([0.0] * 4, None)
        return {"cider": round(float(cider), 4), "bleu4": round(float(bleus[3]), 4), "count": len(predictions)}

    def prediction_records(self, predictions: list[dict]) -> list[dict]:
        return [{"image_id": p["image_id"], "caption": p["caption"]} for p in predictions]

    def build_sample(self, row: list[str], split: str, index: int) -> dict[str, Any]:
        if len(row) < 3:
            raise ValueError(f"expected 3 columns (id, image, caption) after --selected-cols, got {len(row)}")
        uniq_id, image, caption = row[:3]
        if split == "train" and not self.cfg.scst:
            words = caption.translate(_NO_PUNCTUATION).strip().split()
            if not words:  # the target would be a lone space token: nothing to learn
                raise ValueError("empty caption (no words after removing punctuation)")
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
