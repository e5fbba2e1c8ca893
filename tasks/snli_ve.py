"""Visual entailment (OFA ``snli_ve``, spec §4.4): answer yes / no / maybe, scored over all candidates.

TSV after ``--selected-cols``: id, image (base64), hypothesis, premise caption, label
(entailment -> yes, contradiction -> no, neutral -> maybe). Prompts follow the original, with the premise
caption when ``--add-caption`` (every script). Prompt types, trie and evaluation are shared with VQA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.base import TASKS, TaskConfig, pre_caption
from tasks.vqa_gen import ClassifyAsGeneration

LABELS = {"contradiction": "no", "entailment": "yes", "neutral": "maybe"}


@dataclass
class SnliVeConfig(TaskConfig):
    ans2label_dict: str = '{"no": 0, "yes": 1, "maybe": 2}'
    ans2label_file: str | None = None
    add_caption: bool = False
    valid_batch_size: int = 20
    prompt_type: str = "none"
    eval_args: str = "{}"
    unconstrained_training: bool = False


@TASKS.register("snli_ve", SnliVeConfig)
class SnliVeTask(ClassifyAsGeneration):
    metric_name = "snli_score"

    def build_sample(self, row: list[str], split: str, index: int) -> dict[str, Any]:
        if len(row) < 5:
            raise ValueError(f"expected 5 columns (id, image, hypothesis, caption, label), got {len(row)}")
        uniq_id, image, hypothesis, caption, label = row[:5]
        if label not in LABELS:
            raise ValueError(f"label must be one of {sorted(LABELS)}, got {label!r}")
        answer = LABELS[label]
        hypothesis = pre_caption(hypothesis, self.cfg.max_src_length)
        if self.cfg.add_caption:
            caption = pre_caption(caption, self.cfg.max_src_length)
            prompt = f' can image and text1 " {caption} " imply text2 " {hypothesis} "?'
        else:
            prompt = f' does the image describe " {hypothesis} "?'
        source = self.encode_text(prompt, bos=True, eos=True)
        sample = {"id": uniq_id, "patch_image": self.load_image(image), "patch_mask": True}
        sample.update(self.sequences(source, self.encode_text(" " + answer)))
        sample.update(ref_dict={answer: 1.0}, conf=1.0)
        return sample

    def eval_step(self, model, sample: dict, generator=None, **options) -> list[dict]:
        answers = self.predict(model, sample, generator, beam_search=options.get("beam_search", False))
        return [
            {"uniq_id": uid, "answer": ans, "score": refs.get(ans, 0.0)}
            for uid, ans, refs in zip(sample["id"], answers, sample["ref_dict"], strict=True)
        ]
