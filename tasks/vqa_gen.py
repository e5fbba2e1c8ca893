"""Visual question answering as generation (OFA ``vqa_gen``, spec §4.2).

TSV after ``--selected-cols``: question-id, image (base64), question, answers ``"conf|!+answer&&..."``, objects
(and an optional caption). The question is the prompt (``?`` appended, no instruction); the target is the
highest-confidence answer, and the loss is weighted by its confidence (``conf``). ``--prompt-type prev_output``
(every finetuning script) puts ``bos + question`` into the decoder prefix, so the loss covers answer + eos.
A trie of the candidate answers (``--ans2label-file``) constrains training and inference; evaluation scores
every candidate (``allcand``, the paper's numbers) or beam-searches with the question forced as prefix.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from typing import Any

import torch

from data.collate import collate_tokens
from models.candidates import CandidateTrie, score_candidates
from tasks.base import TASKS, Task, TaskConfig, int_or_str, pre_caption
from utils.metrics import parse_vqa_answers
from utils.trie import Trie


@dataclass
class VqaGenConfig(TaskConfig):
    max_object_length: int = 30
    ans2label_dict: str = '{"no": 0, "yes": 1}'
    ans2label_file: str | None = None
    add_object: bool = False
    valid_batch_size: int = 20
    prompt_type: str = "none"
    val_inference_type: str = "allcand"
    eval_args: str = '{"beam":5,"unnormalized":true,"temperature":1.0}'
    unconstrained_training: bool = False


class _AnswerUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"answer list pickles may hold only plain dicts/strings/ints, not {module}.{name}")


def load_answers(cfg: VqaGenConfig | Any) -> list[str]:
    """Candidate answers in label order, from --ans2label-file (a pickled dict) or --ans2label-dict (JSON)."""
    if cfg.ans2label_file:
        with open(cfg.ans2label_file, "rb") as f:
            mapping = _AnswerUnpickler(f).load()
    else:
        mapping = json.loads(cfg.ans2label_dict)
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError("--ans2label-file / --ans2label-dict must hold a non-empty {answer: label} dict")
    return list(mapping)


class ClassifyAsGeneration(Task):
    """Shared by VQA and SNLI-VE: prompt types, answer trie, constraint masks, all-candidate evaluation."""

    passthrough_keys = ("decoder_prompt", "ref_dict", "conf", "constraint_mask")

    def __init__(self, cfg, tokenizer=None):
        super().__init__(cfg, tokenizer)
        if cfg.prompt_type not in ("none", "src", "prev_output"):
            raise ValueError(f"--prompt-type must be none, src or prev_output, got {cfg.prompt_type!r}")
        self.answers = load_answers(cfg)
        self.answer_tokens = [self.encode_text(" " + a).tolist() for a in self.answers]
        self.trie = Trie.from_sequences(self.answer_tokens, bos=self.bos, eos=self.eos)
        self.candidates = CandidateTrie.build(self.answer_tokens, eos=self.eos)

    def sequences(self, source: torch.Tensor, answer: torch.Tensor) -> dict[str, Any]:
        """prev_output / target / decoder prompt for the prompt type; loss only on answer + eos."""
        bos = torch.tensor([self.bos])
        prompt = {"none": bos, "src": source, "prev_output": source[:-1]}[self.cfg.prompt_type]
        prev = torch.cat([prompt, answer])
        target = torch.cat([prev[1:], torch.tensor([self.eos])])
        target[: -len(answer) - 1] = self.pad
        out = {"source": source, "prev_output_tokens": prev, "target": target, "decoder_prompt": prompt.tolist()}
        if not self.cfg.unconstrained_training:
            out["constraint_mask"] = self._constraint_mask(target, len(answer))
        return out

    def _constraint_mask(self, target: torch.Tensor, answer_len: int) -> torch.Tensor:
        mask = torch.zeros(len(target), len(self.tokenizer), dtype=torch.bool)
        start = len(target) - answer_len - 1
        for i in range(start, len(target)):
            mask[i, self.trie.get_next_layer([self.bos] + target[start:i].tolist())] = True
        return mask

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(samples)
        if not batch:
            return batch
        batch["conf"] = torch.tensor([s["conf"] for s in samples], dtype=torch.float)
        if "constraint_mask" in samples[0]:
            # padded rows are all-True, as the original pads boolean masks with pad_idx=1; they are pad targets
            batch["constraint_masks"] = collate_tokens([s["constraint_mask"] for s in samples], self.pad)
            del batch["constraint_mask"]
        prompts = [torch.tensor(p) for p in batch["decoder_prompt"]]
        batch["prefix_tokens"] = collate_tokens(prompts, self.pad)[:, 1:]
        return batch

    def eval_enabled(self) -> bool:
        return True

    def predict(self, model, sample: dict, generator=None, beam_search: bool = False, zero_shot: bool = False) -> list:
        model.eval()
        if not beam_search and not zero_shot:
            scores = score_candidates(model, sample["net_input"], self.candidates, sample["decoder_prompt"])
            return [self.answers[i] for i in scores.argmax(1).tolist()]
        generator = generator or self.build_generator()
        prefix = None if zero_shot else sample["prefix_tokens"]
        if zero_shot:
            generator.trie, generator.cfg.zero_shot = None, True
        hypos = generator.generate(model, sample, prefix_tokens=prefix)
        out = []
        for i, hyp in enumerate(hypos):
            start = int(prefix[i].ne(self.pad).sum()) if prefix is not None else 0
            out.append(self.tokenizer.decode(hyp[0]["tokens"][start:]).strip())
        return out


@TASKS.register("vqa_gen", VqaGenConfig)
class VqaGenTask(ClassifyAsGeneration):
    metric_name = "vqa_score"

    def build_sample(self, row: list[str], split: str, index: int) -> dict[str, Any]:
        if len(row) < 5:
            raise ValueError(f"expected 5 columns (id, image, question, answers, objects), got {len(row)}")
        uniq_id, image, question, answers, objects = row[:5]
        question = pre_caption(question, self.cfg.max_src_length, person=False)
        question = question if question.endswith("?") else question + "?"
        source = self.encode_text(" " + question)
        if self.cfg.add_object and objects:
            listed = " ".join(objects.strip().split("&&")[: self.cfg.max_object_length])
            source = torch.cat([source, self.encode_text(" object: " + listed)])
        source = torch.cat([torch.tensor([self.bos]), source, torch.tensor([self.eos])])
        ref_dict = parse_vqa_answers(answers)
        answer = max(ref_dict, key=ref_dict.get)
        if split == "train" and not answer.strip():
            raise ValueError(f"empty answer in the answers column {answers!r}")
        sample = {"id": uniq_id, "patch_image": self.load_image(image), "patch_mask": True}
        sample.update(self.sequences(source, self.encode_text(" " + answer)))
        sample.update(ref_dict=ref_dict, conf=ref_dict[answer])
        return sample

    def eval_step(self, model, sample: dict, generator=None, **options) -> list[dict]:
        beam = options.get("beam_search", self.cfg.val_inference_type == "beamsearch")
        answers = self.predict(model, sample, generator, beam_search=beam, zero_shot=options.get("zero_shot", False))
        return [
            {"question_id": int_or_str(qid), "answer": ans, "score": refs.get(ans, 0.0)}
            for qid, ans, refs in zip(sample["id"], answers, sample["ref_dict"], strict=True)
        ]
