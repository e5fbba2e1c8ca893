"""OFA's ``clip_scst_reward_criterion``: self-critical training of image generation with a CLIP reward (§5.4).

The same procedure as ``scst_reward_criterion`` (``criterions/scst.py``), with these differences:

- the hypotheses are sampled code sequences (the task's SCST generator always samples; the recipes draw 5 per
  caption with top-k 256 and exactly 1,024 codes), turned into images by the task's VQGAN;
- the reward of an image is ``2.5 * cos(CLIP(image), CLIP(caption))`` where the caption is the one of its source
  row; the baseline is the mean reward of the caption's other images (leave-one-out), in float64;
- teacher forcing repeats ``code_masks`` with the sources, so the decoder takes its image-code path.

The logged ``score`` is the sum of the rewards (``score / nsentences`` is the mean, as in the original's
``reduce_metrics``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from criterions.base import CRITERIONS
from criterions.scst import ScstRewardCriterion, collate_right

CLIP_REWARD_WEIGHT = 2.5


@dataclass
class ClipScstRewardConfig:
    ignore_prefix_size: int = 0
    sentence_avg: bool = False
    constraint_range: str | None = None
    scst_args: str = '{"beam":5,"min_len":1024,"max_len_a":0,"max_len_b":1024,"sampling_topk":256,"temperature":1.0}'


def clip_rewards(cosines: np.ndarray, weight: float = CLIP_REWARD_WEIGHT) -> np.ndarray:
    """The per-image reward before the baseline: ``weight * cos`` (float64)."""
    return weight * np.asarray(cosines, dtype=np.float64)


@CRITERIONS.register("clip_scst_reward_criterion", ClipScstRewardConfig)
class ClipScstRewardCriterion(ScstRewardCriterion):
    """The SCST criterion with images as hypotheses and CLIP image-text similarity as the reward."""

    def get_generator(self):
        if self.generator is None:
            self.generator = getattr(self.task, "scst_generator", None)
        if self.generator is None:
            from models.generate import GenerationConfig

            self.generator = self.task.build_generator(GenerationConfig.from_args(self.cfg.scst_args))
        return self.generator

    def generate(self, model: nn.Module, sample: dict) -> tuple[list[Tensor], list[Tensor], list[str]]:
        """Hypothesis token rows (image by image, eos kept), their code rows, and each row's caption."""
        hyps = self.hypotheses(model, sample)
        codes = [tokens[: self.task.num_codes] for tokens in hyps]
        return hyps, codes, self.captions(sample)

    def captions(self, sample: dict) -> list[str]:
        """Each row's caption: the task's passthrough column, or (as the original) the decoded source minus the
        38-character prompt, with '/' removed."""
        if sample.get("caption") is not None:
            return list(sample["caption"])
        rows = [row[row.ge(4)] for row in sample["net_input"]["src_tokens"]]
        return [self.decode(row)[37:].replace("/", "") for row in rows]  # strip() already removed the leading space

    def cider_scores(self, codes: list[Tensor], captions: list[str], seq_per_img: int) -> np.ndarray:
        """CLIP rewards (the name is the SCST hook this criterion overrides): images vs their captions."""
        images = self.task.codes_to_images(torch.stack(codes))
        texts = [captions[i // seq_per_img] for i in range(len(images))]
        with torch.no_grad():
            cosines = self.task.clip.similarity(images, texts)
        return clip_rewards(cosines.double().cpu().numpy())

    def teacher_force(self, model: nn.Module, sample: dict, hyps: list[Tensor], seq_per_img: int) -> tuple:
        net_input = sample["net_input"]
        device = sample["target"].device
        inputs = {
            key: net_input[key].repeat_interleave(seq_per_img, dim=0)
            for key in ("src_tokens", "src_lengths", "code_masks")
        }
        inputs["prev_output_tokens"] = collate_right(hyps, self.padding_idx, device, bos=self.tokenizer.bos)
        return model(**inputs)[0], collate_right(hyps, self.padding_idx, device)
