"""Image classification as generation (OFA ``image_classify``, ImageNet-1K finetuning, spec §4.6).

TSV after ``--selected-cols 0,2`` (the scripts' value): image (base64), label name. The sample id is the row's
index in the file (the original uses the dataset index too; its per-rank slices made it rank-local). The
classes are the keys of ``--ans2label-file`` (a pickled ``{name: label}`` dict, ``class2label_new.pkl``) or of
``--ans2label-dict`` (JSON; the original's default ``{"no": 0, "yes": 1}`` is kept).

* Source ``[bos] + " what does the image describe?" + [eos]``; target ``" {label}" + [eos]``; prev output
  ``[bos] + " {label}"`` (prompt type ``none``, fixed here as in the original, which has no such flag).
  The constraint mask row i allows ``trie.get_next_layer(prev[:i+1])``. ``ref_dict = {label: 1.0}``.
* Training images: convert RGB -> timm ``create_transform(S, is_training=True, color_jitter=0.4,
  auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1)``
  steps 0-2 (RandomResizedCrop, horizontal flip, timm RandAugment; timm skips colour jitter when
  auto_augment is set) -> OFA's ``RandomAugment(2, 7, 10 ops)`` -> timm's remaining steps (ToTensor, Normalize,
  RandomErasing). Other splits: bicubic S x S resize. Mean/std are ImageNet's with
  ``--imagenet-default-mean-and-std`` (the script passes it), else 0.5.
* Reproducible augmentation (not in the original, whose workers use the global random state): a training row
  is built under python/numpy/torch-CPU generators seeded from ``(--seed, epoch, row index)`` and restored
  afterwards (``data.augment.seeded_rngs``), so a resumed run sees the same images. ``--seed`` is the training
  seed; this config shares the flag.
* Evaluation (validation and ``evaluate.py``): every class is scored by its summed log-probabilities under the
  trie-masked softmax, argmax -> class name (the original's ``valid_step`` / ``eval_image_classify``). With the
  prompt ``[bos]`` every mask row is a trie row, so the original's scoring has no all-False rows to zero and is
  exactly ``models.candidates.score_candidates`` (tested). ``--valid-batch-size`` only chunked the original's
  candidate batches; it does not change the scores and is kept for the scripts' command line. Optionally
  ``--val-inference-type beamsearch`` (or ``evaluate.py --beam-search-vqa-eval``) decodes with the trie.
* Metric ``score`` = top-1 accuracy; predictions ``[{"uniq_id": int, "answer": str}]``.
* The finetuning script validates on ``imagenet_1k_val_subset.tsv``, a separate file given as the last
  ``--data`` path; the original has no option to subsample the validation set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms

from data.augment import RandomAugment, seeded_rngs
from data.images import decode_base64_image
from data.tsv import TSVFile
from tasks.base import IMAGENET_MEAN_STD, OFA_MEAN_STD, TASKS, TaskConfig, TaskDataset
from tasks.vqa_gen import ClassifyAsGeneration

PROMPT = " what does the image describe?"
TIMM_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"
RANDOM_AUGMENT_OPS = (
    "Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness",
    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
)  # fmt: skip
_TIMM_HEAD = ("RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "RandAugment")


@dataclass
class ImageClassifyConfig(TaskConfig):
    ans2label_dict: str = '{"no": 0, "yes": 1}'
    ans2label_file: str | None = None
    valid_batch_size: int = field(default=20, metadata={"help": "the original's candidate chunk; scores unchanged"})
    val_inference_type: str = field(default="allcand", metadata={"help": "allcand (the original) or beamsearch"})
    eval_args: str = '{"beam":5,"unnormalized":true,"temperature":1.0}'
    seed: int = field(default=1, metadata={"help": "random seed; also seeds each training image's augmentation"})
    # fixed as in the original (read by ClassifyAsGeneration; class attributes, so no flags)
    prompt_type: ClassVar[str] = "none"
    unconstrained_training: ClassVar[bool] = False


def _to_rgb(image: Image.Image) -> Image.Image:
    """The original's first step (a named function, so the pipeline pickles for DataLoader workers)."""
    return image.convert("RGB")


def train_transform(size: int, imagenet_mean_std: bool = False) -> transforms.Compose:
    """The original's training pipeline: timm's ImageNet recipe with OFA's RandomAugment inserted after step 2."""
    mean, std = IMAGENET_MEAN_STD if imagenet_mean_std else OFA_MEAN_STD
    timm_steps = create_transform(
        input_size=size, is_training=True, color_jitter=0.4, auto_augment=TIMM_AUTO_AUGMENT,
        interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1, mean=mean, std=std,
    ).transforms  # fmt: skip
    names = tuple(type(step).__name__ for step in timm_steps[:3])
    if names != _TIMM_HEAD or len(timm_steps) != 6:
        raise RuntimeError(f"unexpected timm training transform layout {[type(s).__name__ for s in timm_steps]}")
    random_augment = RandomAugment(2, 7, augs=RANDOM_AUGMENT_OPS)
    return transforms.Compose([_to_rgb, *timm_steps[:3], random_augment, *timm_steps[3:]])


class SeededDataset(TaskDataset):
    """A task dataset whose training rows are built under RNGs seeded from (seed, epoch, row index)."""

    def __init__(self, task: ImageClassifyTask, table: TSVFile, split: str, epoch: int):
        super().__init__(task, table, split)
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.split != "train":
            return super().__getitem__(index)
        with seeded_rngs(self.task.cfg.seed, self.epoch, index):
            return super().__getitem__(index)


@TASKS.register("image_classify", ImageClassifyConfig)
class ImageClassifyTask(ClassifyAsGeneration):
    metric_name = "score"

    def __init__(self, cfg: ImageClassifyConfig, tokenizer=None):
        if cfg.val_inference_type not in ("allcand", "beamsearch"):
            raise ValueError(f"--val-inference-type must be allcand or beamsearch, got {cfg.val_inference_type!r}")
        super().__init__(cfg, tokenizer)
        self.classes = set(self.answers)
        self.source = self.encode_text(PROMPT, bos=True, eos=True)
        self.train_transform = train_transform(cfg.patch_image_size, cfg.imagenet_default_mean_and_std)

    def dataset(self, split: str, epoch: int = 1) -> SeededDataset:
        table = super().dataset(split, epoch).table
        return SeededDataset(self, table, split, epoch)

    def build_sample(self, row: list[str], split: str, index: int) -> dict[str, Any]:
        """One row (image, label name) -> sample; training rows get the random augmentation."""
        if len(row) < 2:
            raise ValueError(f"expected 2 columns (image, label name; --selected-cols 0,2), got {len(row)}")
        image, label = row[0], row[1]
        if split == "train" and label not in self.classes:
            raise ValueError(f"label {label!r} is not one of the {len(self.classes)} --ans2label classes")
        picture = decode_base64_image(image)
        patch = self.train_transform(picture) if split == "train" else self.patch_transform(picture)
        sample = {"id": index, "patch_image": patch, "patch_mask": True}
        sample.update(self.sequences(self.source.clone(), self.encode_text(" " + label)))
        sample.update(ref_dict={label: 1.0}, conf=1.0)
        return sample

    def eval_step(self, model, sample: dict, generator=None, **options) -> list[dict]:
        """All-candidate top-1 (or trie-constrained beam search); ``score`` is 1.0 for a correct class."""
        beam = options.get("beam_search", self.cfg.val_inference_type == "beamsearch")
        with torch.no_grad():
            answers = self.predict(model, sample, generator, beam_search=bool(beam))
        return [
            {"uniq_id": int(uid), "answer": ans, "score": refs.get(ans, 0.0)}
            for uid, ans, refs in zip(sample["id"], answers, sample["ref_dict"], strict=True)
        ]
