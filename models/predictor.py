"""Inference on raw inputs (PIL images, image files, texts) with a trained OFA checkpoint.

``OFAPredictor`` wraps a checkpoint and answers one call per task: ``caption``, ``vqa``, ``ground``,
``classify``, ``summarize`` and ``generate_images``. Every request is turned into a TSV-like row in the task's
own column layout (images as base64, a dummy answer/label column) so the task's ``build_sample``, ``collate``
and ``eval_step`` do the preprocessing and decoding exactly as in evaluation; there is one preprocessing path.

Task settings come from the checkpoint's saved task config when the checkpoint was trained on the requested
task; otherwise the requested task's config is built from the checkpoint's common settings (``bpe_dir``,
``patch_image_size``, ...). Generation follows the original evaluation recipes (``RECIPES``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import tasks  # noqa: F401  (registers every task)
from data.images import encode_image_base64, load_image
from models import from_pretrained
from models.generate import GenerationConfig, SequenceGenerator
from tasks.base import TASKS, Task, TaskConfig, build_tokenizer
from trainer import move_to
from utils.config import fill

ImageInput = Image.Image | str | os.PathLike

# predictor method -> registered task name
TASK_OF = {"caption": "caption", "vqa": "vqa_gen", "ground": "refcoco", "classify": "image_classify",
           "summarize": "gigaword"}  # fmt: skip

# the original evaluation scripts' generation settings (run_scripts/*/evaluate_*.sh)
RECIPES: dict[str, dict[str, Any]] = {
    "caption": {"beam": 5, "max_len_b": 16, "no_repeat_ngram_size": 3},
    # free-form VQA (no answer list): the question is forced as prefix, then at most 10 answer tokens
    "vqa_gen": {"beam": 5, "unnormalized": True, "max_len_a": 1.0, "max_len_b": 10},
    "refcoco": {"beam": 5, "min_len": 4, "max_len_a": 0, "max_len_b": 4, "no_repeat_ngram_size": 3},
    "gigaword": {"beam": 6, "lenpen": 0.7, "max_len_b": 32, "no_repeat_ngram_size": 3},
}
COMMON_FIELDS = {f.name for f in dataclasses.fields(TaskConfig)}


class RecordingGenerator:
    """A generator proxy that keeps the hypotheses of its last ``generate`` call (for their scores)."""

    def __init__(self, inner: SequenceGenerator):
        self.inner = inner
        self.last: list[list[dict[str, torch.Tensor]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, model, sample: dict, prefix_tokens: torch.Tensor | None = None) -> list:
        """The inner generator's hypotheses, also kept in ``last``."""
        self.last = self.inner.generate(model, sample, prefix_tokens=prefix_tokens)
        return self.last


def to_image(image: ImageInput) -> Image.Image:
    """An RGB PIL image from a PIL image or an image file path (clear errors for missing/unreadable files)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = os.fspath(image)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} does not exist")
    return load_image(Path(path))


class OFAPredictor:
    """One loaded checkpoint; per-task methods take lists of inputs and return one result per input."""

    def __init__(self, model, *, bpe_dir: str | None = None, device: str = "cpu", bf16: bool = False):
        self.model, self.device, self.bf16 = model, torch.device(device), bf16
        self.saved: dict[str, Any] = dict(getattr(model, "task_args", None) or {})
        if bpe_dir is not None:
            self.saved["bpe_dir"] = str(bpe_dir)
        self.checkpoint_task: str | None = self.saved.get("_name")
        self.tokenizer = build_tokenizer(fill(TaskConfig, self.saved))
        self.batch_size = 8
        self._tasks: dict[str, Task] = {}

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, bpe_dir: str | None = None, device: str = "cpu", bf16: bool = False,
        ema: bool = False,
    ) -> OFAPredictor:  # fmt: skip
        """Load ``path`` (an OFA checkpoint); ``bpe_dir`` overrides the checkpoint's saved BPE folder."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return cls(from_pretrained(path, ema=ema, device=device), bpe_dir=bpe_dir, device=device, bf16=bf16)

    # ------------------------------------------------------------------ tasks and generation
    def task_values(self, name: str) -> dict[str, Any]:
        """Settings for task ``name``: all saved ones for the checkpoint's own task, else the common ones."""
        if name == self.checkpoint_task:
            values = dict(self.saved)
        else:
            values = {k: v for k, v in self.saved.items() if k in COMMON_FIELDS}
        values["data"] = ""
        if name == "vqa_gen":
            values["unconstrained_training"] = True  # no constraint masks for the dummy answers
            if not self.has_answer_list():
                values["prompt_type"] = "prev_output"  # the question becomes the forced decoder prefix
        return values

    def has_answer_list(self) -> bool:
        """Whether the checkpoint is a VQA one with its own candidate answers (all-candidate scoring)."""
        return self.checkpoint_task == "vqa_gen"

    def task(self, name: str) -> Task:
        """The (cached) task object of registered task ``name``, sharing this predictor's tokenizer."""
        if name not in self._tasks:
            entry = TASKS.get(name)
            self._tasks[name] = entry.cls(fill(entry.config, self.task_values(name)), self.tokenizer)
        return self._tasks[name]

    def generator(self, name: str, beam: int | None = None, trie: bool = True) -> RecordingGenerator:
        """A generator with the original recipe of task ``name`` (``beam`` overrides the beam size)."""
        values = dict(RECIPES[name])
        if beam is not None:
            values["beam"] = int(beam)
        task = self.task(name)
        gen = task.build_generator(GenerationConfig.from_args(values))
        if not trie:
            gen.trie = None
        return RecordingGenerator(gen)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on the predictor's device when ``bf16``, else a no-op."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @torch.no_grad()
    def run(self, name: str, rows: list[list[str]], generator=None, **options: Any) -> list[tuple[dict, list]]:
        """``eval_step`` on the rows in batches: (prediction, best hypothesis list or []) per row."""
        task = self.task(name)
        out: list[tuple[dict, list]] = []
        for start in range(0, len(rows), max(self.batch_size, 1)):
            part = rows[start : start + max(self.batch_size, 1)]
            samples = [task.build_sample(row, "test", start + i) for i, row in enumerate(part)]
            sample = move_to(task.collate(samples), self.device)
            with self.autocast():
                preds = task.eval_step(self.model, sample, generator, **options)
            hypos = list(generator.last) if isinstance(generator, RecordingGenerator) else [[]] * len(preds)
            out += list(zip(preds, hypos, strict=True))
        return out

    # ------------------------------------------------------------------ the public tasks
    def caption(self, images: Sequence[ImageInput], beam: int | None = None) -> list[str]:
        """A caption per image (beam 5, at most 16 tokens, no repeated 3-grams)."""
        rows = [[str(i), encode_image_base64(to_image(im)), "none"] for i, im in enumerate(images)]
        return [p["caption"] for p, _ in self.run("caption", rows, self.generator("caption", beam))]

    def vqa(self, images: Sequence[ImageInput], questions: Sequence[str], beam: int | None = None) -> list[str]:
        """An answer per (image, question): all-candidate scoring with the checkpoint's answer list, else
        beam search with the question forced as decoder prefix."""
        if len(images) != len(questions):
            raise ValueError(f"vqa needs one question per image, got {len(images)} images, {len(questions)} questions")
        task = self.task("vqa_gen")
        dummy = f"1.0|!+{task.answers[0]}"
        rows = [[str(i), encode_image_base64(to_image(im)), q, dummy, ""] for i, (im, q) in
                enumerate(zip(images, questions, strict=True))]  # fmt: skip
        if self.has_answer_list() and beam is None:
            return [p["answer"] for p, _ in self.run("vqa_gen", rows, None, beam_search=False)]
        generator = self.generator("vqa_gen", beam, trie=self.has_answer_list())
        return [p["answer"] for p, _ in self.run("vqa_gen", rows, generator, beam_search=True)]

    def ground(self, images: Sequence[ImageInput], texts: Sequence[str], beam: int | None = None) -> list[dict]:
        """The region each text describes: ``{"box": [x0, y0, x1, y1] pixels in the image, "score": float}``."""
        if len(images) != len(texts):
            raise ValueError(f"ground needs one text per image, got {len(images)} images, {len(texts)} texts")
        pictures = [to_image(im) for im in images]
        rows = [[str(i), encode_image_base64(im), t, "0,0,1,1"] for i, (im, t) in
                enumerate(zip(pictures, texts, strict=True))]  # fmt: skip
        results = []
        for picture, (pred, hypos) in zip(pictures, self.run("refcoco", rows, self.generator("refcoco", beam)),
                                          strict=True):  # fmt: skip
            results.append({"box": clip_box(pred["box"], *picture.size), "score": float(hypos[0]["score"])})
        return results

    def classify(self, images: Sequence[ImageInput]) -> list[str]:
        """The class name per image (all-candidate scoring over the checkpoint's classes)."""
        if self.checkpoint_task != "image_classify":
            raise ValueError(f"classify needs an image_classify checkpoint; this one is {self.checkpoint_task!r}")
        label = self.task("image_classify").answers[0]
        rows = [[encode_image_base64(to_image(im)), label] for im in images]
        return [p["answer"] for p, _ in self.run("image_classify", rows, None, beam_search=False)]

    @torch.no_grad()
    def summarize(self, texts: Sequence[str], beam: int | None = None) -> list[str]:
        """A headline per text (Gigaword recipe: beam 6, length penalty 0.7, at most 32 tokens)."""
        task = self.task("gigaword")
        generator = self.generator("gigaword", beam)
        out: list[str] = []
        step = max(self.batch_size, 1)
        for start in range(0, len(texts), step):
            part = texts[start : start + step]
            samples = [task.build_sample([text, ""], "test", start + i) for i, text in enumerate(part)]
            sample = move_to(task.collate(samples), self.device)
            with self.autocast():
                out += task.summarize(self.model, sample, generator)
        return out

    @torch.no_grad()
    def generate_images(
        self, texts: Sequence[str], out_dir: str | os.PathLike, *, vqgan_model_path: str, vqgan_config_path: str,
        clip_model_path: str | None = None, num_samples: int = 24, seed: int = 42, sampling_topk: int = 256,
    ) -> list[dict]:  # fmt: skip
        """``num_samples`` images per text (top-k sampling of the VQGAN codes, the evaluation recipe's settings),
        reranked by CLIP when ``clip_model_path`` is given, written best first as ``out_dir/all_results/{text}_{j}.png``
        plus ``out_dir/top1/{text}_0.png``. Returns ``{"images": paths, "scores": CLIP scores or None}`` per text."""
        task = self.image_gen_task(out_dir, vqgan_model_path, vqgan_config_path, clip_model_path)
        generator = task.build_generator(GenerationConfig(beam=num_samples, sampling_topk=sampling_topk, seed=seed))
        rows = [[str(i), text] for i, text in enumerate(texts)]
        sample = move_to(task.collate([task.build_sample(r, "test", i) for i, r in enumerate(rows)]), self.device)
        with self.autocast():
            all_images = task.generate_images(self.model, sample, generator)
        results = []
        for caption, images in zip(sample["caption"], all_images, strict=True):
            scores = None
            if clip_model_path:
                order, ranked = task.rerank(images, caption, None)
                images, scores = [images[j] for j in order], [round(float(v), 6) for v in ranked]
            results.append({"images": task.dump_images(images, caption)[: len(images)], "scores": scores})
        return results

    def image_gen_task(self, out_dir, vqgan_model_path: str, vqgan_config_path: str, clip_model_path: str | None):
        """The image_gen task for this checkpoint's code image size, writing into ``out_dir``."""
        values = self.task_values("image_gen") | {"vqgan_model_path": vqgan_model_path, "vqgan_config_path":
                  vqgan_config_path, "clip_model_path": clip_model_path, "gen_images_path": str(out_dir)}  # fmt: skip
        values["code_image_size"] = self.model.cfg.code_image_size
        entry = TASKS.get("image_gen")
        task = entry.cls(fill(entry.config, values), self.tokenizer)
        task.vqgan.to(self.device)
        if clip_model_path:
            task.clip.to(self.device)
        return task


def clip_box(box: Sequence[float], width: int, height: int) -> list[float]:
    """``x0, y0, x1, y1`` clipped to the image and ordered so x0 <= x1, y0 <= y1."""
    x0, x1 = sorted(min(max(float(v), 0.0), float(width)) for v in (box[0], box[2]))
    y0, y1 = sorted(min(max(float(v), 0.0), float(height)) for v in (box[1], box[3]))
    return [round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)]
