"""The examples of OFA's pretraining mixture (``unify_task``, spec §4.9): prompts, targets and transforms.

One image-text row (``uniq_id, image, caption, question, refs, gt_objects, dataset_name, type``) gives:

* ``caption``: `` what does the image describe?`` -> the caption (``pre_caption``, ``--max-tgt-length`` words); for
  ``dataset_name == "cc12m"`` the first two target positions are pad (not trained);
* ``qa``: the question itself (``pre_question``, no ``?`` appended) -> the highest-confidence answer, loss weighted
  by its confidence;
* ``visual_grounding``: `` which region does the text " {} " describe?`` -> 4 ``<bin_i>`` tokens, and always a
  grounded-captioning example ``  what does the region describe? region:`` (two leading spaces) + the bins ->
  the caption;
* in the train split, caption and qa rows add one image-text-matching example, positive or negative with
  probability 1/2, answered `` yes`` / `` no``; negatives substitute an object of the caption (``object.txt``),
  take a random caption (``all_captions.txt``) or a same-type answer (``type2ans.json``).

Pure text, image and detection rows (the second batch, v2, confidence 2.0) give text infilling (the masked text
inside `` what is the complete text of " "?``), image infilling (the centre of a 2c x 2c image zeroed after
normalisation -> its VQGAN codes) and detection (each kept box's 4 bins + the BPE of `` <name>``).

Images: caption/qa ``RandomResize(range(S, 481), max_size=672)`` -> ``CenterCrop(S)`` -> ``RandomAugment(2, 7)``;
grounding ``RandomResize`` -> ``ObjectCenterCrop``; detection ``RandomHorizontalFlip`` -> ``LargeScaleJitter(2c, 1.0,
1.5)``; boxes are binned relative to ``--max-image-size`` (512), not to the image size. Random choices use the
global python/numpy/torch generators, which the dataset seeds per row (``tasks.unify_task``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms

from data.augment import RandomAugment
from data.box_transforms import BoxedImage, LargeScaleJitter, ObjectCenterCrop, RandomHorizontalFlip, RandomResize
from data.images import decode_base64_image
from data.noise import WholeWordMasking
from data.tokenizer import OFATokenizer
from tasks.base import OFA_MEAN_STD, pre_caption
from tasks.image_classify import RANDOM_AUGMENT_OPS
from utils.metrics import boxes_to_bins, parse_vqa_answers

CAPTION_PROMPT = " what does the image describe?"
GROUNDING_PROMPT = ' which region does the text " {} " describe?'
REGION_PROMPT = "  what does the region describe? region:"
ITM_CAPTION_PROMPT = ' does the image describe " {} "?'
ITM_QA_PROMPT = ' what is the answer to question " {} ". is " {} "?'
TEXT_PROMPT = ' what is the complete text of " "?'
IMAGE_PROMPT = " what is the image in the middle part?"
DETECTION_PROMPT = " what are the objects in the image?"
KINDS = ("caption", "qa", "visual_grounding")
TEXT_MAX_TOKENS, TEXT_KEEP_TOKENS = 512, 256  # BPE tokens read, then the last ones kept
RESIZE_MAX_SHORT, RESIZE_MAX_SIZE = 480, 672
V2_CONF = 2.0

Example = dict[str, Any]


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (--neg-sample-dir: all_captions.txt, object.txt, type2ans.json)")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _pick_other(options: list[str], avoid: str) -> str:
    """One of all options but the last; the last one if the draw was ``avoid`` (the original's rule)."""
    choice = random.choice(options[:-1])
    return options[-1] if choice == avoid else choice


@dataclass
class NegativeSamples:
    """The ``negative_sample/`` folder: captions, object names and answers grouped by question type."""

    captions: list[str]
    objects: list[str]
    type2ans: dict[str, list[str]]
    ans2type: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        # an answer listed under several types keeps the last one; "other" answers get no type
        self.ans2type = {a: kind for kind, answers in self.type2ans.items() if kind != "other" for a in answers}

    @classmethod
    def from_dir(cls, folder: str | Path) -> NegativeSamples:
        folder = Path(folder)
        captions, objects = _lines(folder / "all_captions.txt"), _lines(folder / "object.txt")
        if not (folder / "type2ans.json").is_file():
            raise FileNotFoundError(f"{folder / 'type2ans.json'} is missing")
        type2ans = json.loads((folder / "type2ans.json").read_text(encoding="utf-8"))
        if not captions or len(objects) < 2:
            raise ValueError(f"{folder}: all_captions.txt needs a caption and object.txt at least 2 objects")
        short = [kind for kind, answers in type2ans.items() if len(answers) < 2]
        if "other" not in type2ans or short:
            raise ValueError(f"{folder / 'type2ans.json'}: needs an 'other' list; lists with < 2 answers: {short}")
        return cls(captions, objects, type2ans)

    def caption(self, caption: str, gt_objects: str) -> str:
        """An object of the caption swapped for another (p=0.4 when objects are listed), else a random caption."""
        if random.random() > 0.6 and gt_objects:
            gt_object = random.choice(gt_objects.strip().split("&&"))
            return caption.replace(gt_object, _pick_other(self.objects, gt_object))
        return random.choice(self.captions)

    def answer(self, answer: str, conf: float) -> str:
        """A same-type answer (count +-1 for "how many"), likelier for confident answers, else an "other" one."""
        prob = random.random()
        kind = self.ans2type.get(answer)
        if kind is not None and conf > prob + 0.1:
            if kind == "how many" and answer.isdigit() and prob > 0.5:
                return str(int(answer) + random.choice([-1, 1]))
            return _pick_other(self.type2ans[kind], answer)
        return _pick_other(self.type2ans["other"], answer)


class UnifyExamples:
    """Turns rows of the four pretraining TSVs into examples (dicts of tensors, as the task collater takes)."""

    def __init__(self, cfg: Any, tokenizer: OFATokenizer, negatives: NegativeSamples):
        size, code = cfg.patch_image_size, cfg.code_image_size
        if size > RESIZE_MAX_SHORT:
            raise ValueError(f"unify_task resizes short sides to range(S, 481): --patch-image-size {size} is > 480")
        self.cfg, self.tok, self.negatives = cfg, tokenizer, negatives
        self.to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(*OFA_MEAN_STD)])
        self.resize = RandomResize(range(size, RESIZE_MAX_SHORT + 1), max_size=RESIZE_MAX_SIZE)
        self.center_crop = transforms.CenterCrop(size)
        self.augment = RandomAugment(2, 7, augs=RANDOM_AUGMENT_OPS)
        self.object_crop = ObjectCenterCrop((size, size))
        self.flip, self.jitter = RandomHorizontalFlip(), LargeScaleJitter(2 * code, 1.0, 1.5)
        self.masking = WholeWordMasking(
            tokenizer.word_start_mask(), tokenizer.mask, tokenizer.code_offset, mask_ratio=cfg.mask_ratio,
            random_ratio=cfg.random_ratio, mask_length=cfg.mask_length, poisson_lambda=cfg.poisson_lambda,
            replace_length=cfg.replace_length,
        )  # fmt: skip

    # ------------------------------------------------------------------ helpers
    def encode(self, text: str, use_bpe: bool = True) -> Tensor:
        return self.tok.encode(text, use_bpe=use_bpe)

    def bins(self, box: Tensor) -> Tensor:
        bins = boxes_to_bins(box, num_bins=self.cfg.num_bins, max_image_size=self.cfg.max_image_size)
        return self.encode(" ".join(f"<bin_{b}>" for b in bins), use_bpe=False)

    def example(self, uid: str, source: Tensor, target: Tensor, image: Tensor, **extra: Any) -> Example:
        """bos + source + eos -> target + eos (decoder input bos + target); ``extra`` sets conf/masks."""
        bos, eos = torch.tensor([self.tok.bos]), torch.tensor([self.tok.eos])
        out = {"id": uid, "source": torch.cat([bos, source, eos]), "target": torch.cat([target, eos])}
        out.update(prev_output_tokens=torch.cat([bos, target]), patch_image=image, patch_mask=True, conf=1.0)
        return out | extra

    def matching(self, main: Example, prompt: str, positive: bool) -> Example:
        """Image-text matching on ``main``'s image (and confidence): ``prompt`` -> `` yes`` / `` no``."""
        answer = self.encode(" yes" if positive else " no")
        out = self.example(main["id"], self.encode(prompt), answer, main["patch_image"])
        return out | {"conf": main["conf"]}

    # ------------------------------------------------------------------ image-text rows (v1)
    def image_text(self, row: list[str], split: str) -> list[Example]:
        if len(row) < 8:
            raise ValueError(
                f"expected 8 columns (uniq_id, image, caption, question, refs, gt_objects, dataset_name, type), "
                f"got {len(row)}"
            )
        uid, image_b64, caption, question, refs, gt_objects, dataset_name, kind = row[:8]
        if kind not in KINDS:
            raise ValueError(f"unknown example type {kind!r}; known: {list(KINDS)}")
        image = decode_base64_image(image_b64)
        if kind == "visual_grounding":
            return self.grounding(uid, image, caption, refs)
        patch = self.image_text_patch(image)
        if kind == "caption":
            return self.caption(uid, patch, caption, gt_objects, dataset_name, split)
        return self.qa(uid, patch, question, refs, split)

    def image_text_patch(self, image: Image.Image) -> Tensor:
        image = self.center_crop(self.resize(BoxedImage(image)).image)
        return self.to_tensor(self.augment(image))

    def caption(self, uid: str, patch: Tensor, caption: str, gt_objects: str, dataset: str, split: str) -> list:
        target = self.encode(" " + pre_caption(caption, self.cfg.max_tgt_length))
        main = self.example(uid, self.encode(CAPTION_PROMPT), target, patch)
        if dataset == "cc12m":  # the first two caption tokens are not trained on
            main["target"][:2] = self.tok.pad
            main["target"][-1] = self.tok.eos
        if split != "train":
            return [main]
        positive = random.random() >= 0.5
        shown = caption if positive else self.negatives.caption(caption, gt_objects)
        prompt = ITM_CAPTION_PROMPT.format(pre_caption(shown, self.cfg.max_src_length))
        return [main, self.matching(main, prompt, positive)]

    def qa(self, uid: str, patch: Tensor, question: str, refs: str, split: str) -> list[Example]:
        question = pre_caption(question, self.cfg.max_src_length, person=False)
        answers = parse_vqa_answers(refs)
        answer = max(answers, key=answers.get)
        main = self.example(uid, self.encode(" " + question), self.encode(" " + answer), patch, conf=answers[answer])
        if split != "train":
            return [main]
        positive = random.random() >= 0.5
        shown = answer if positive else self.negatives.answer(answer, answers[answer])
        return [main, self.matching(main, ITM_QA_PROMPT.format(question, shown), positive)]

    def grounding(self, uid: str, image: Image.Image, caption: str, refs: str) -> list[Example]:
        coords = [float(v) for v in refs.strip().split(",")]
        if len(coords) != 4:
            raise ValueError(f"visual_grounding refs must be 'x0,y0,x1,y1', got {refs!r}")
        boxed = self.object_crop(self.resize(BoxedImage(image, torch.tensor([coords]), [caption])))
        patch, region = self.to_tensor(boxed.image), self.bins(boxed.boxes[0])
        source = self.encode(GROUNDING_PROMPT.format(pre_caption(caption, self.cfg.max_src_length)))
        main = self.example(uid, source, region, patch)
        described = self.encode(" " + pre_caption(caption, self.cfg.max_tgt_length))
        return [main, self.example(uid, torch.cat([self.encode(REGION_PROMPT), region]), described, patch)]

    # ------------------------------------------------------------------ pure text / image / detection rows (v2)
    def pure_text(self, row: list[str]) -> Example:
        if len(row) < 2:
            raise ValueError(f"expected 2 columns (uniq_id, text), got {len(row)}")
        uid, text = row[:2]
        tokens = self.encode(" " + text.strip().lower())[:TEXT_MAX_TOKENS][-TEXT_KEEP_TOKENS:]
        tokens = torch.cat([torch.tensor([self.tok.bos]), tokens, torch.tensor([self.tok.eos])])
        masked = self.masking(tokens)
        prefix = self.encode(TEXT_PROMPT)  # the masked text goes between the quotes
        source = torch.cat([prefix[:-2], masked[1:-1], prefix[-2:]])
        blank = torch.zeros(3, 2 * self.cfg.code_image_size, 2 * self.cfg.code_image_size)
        return self.example(uid, source, tokens[1:-1], blank, patch_mask=False, code_mask=False, conf=V2_CONF)

    def pure_image(self, row: list[str]) -> Example:
        if len(row) < 3:
            raise ValueError(f"expected 3 columns (uniq_id, image, codes), got {len(row)}")
        uid, image_b64, code = row[:3]
        image, side = decode_base64_image(image_b64), 2 * self.cfg.code_image_size
        if image.size != (side, side):
            raise ValueError(f"image_data images must be {side}x{side} (2 x --code-image-size), got {image.size}")
        patch = self.to_tensor(image)
        low, high = int(0.5 * self.cfg.code_image_size), int(1.5 * self.cfg.code_image_size)
        patch[:, low:high, low:high] = 0
        codes = torch.tensor([int(v) for v in code.split()], dtype=torch.long)
        if len(codes) == 0 or not bool(((codes >= 0) & (codes < self.cfg.code_dict_size)).all()):
            raise ValueError(f"image codes must be integers in [0, {self.cfg.code_dict_size}), got {code[:80]!r}")
        target = codes + self.tok.code_offset
        return self.example(uid, self.encode(IMAGE_PROMPT), target, patch, code_mask=True, conf=V2_CONF)

    def detection(self, row: list[str]) -> Example:
        if len(row) < 3:
            raise ValueError(f"expected 3 columns (uniq_id, image, boxes), got {len(row)}")
        uid, image_b64, label = row[:3]
        boxes, names = [], []
        for item in label.strip().split("&&"):
            parts = item.strip().split(",", 5)
            if len(parts) != 6:
                raise ValueError(f"detection boxes must be 'x0,y0,x1,y1,category_id,name&&...', got {item!r}")
            boxes.append([float(v) for v in parts[:4]])
            names.append(parts[5])
        sample = BoxedImage(decode_base64_image(image_b64), torch.tensor(boxes), names)
        sample = self.jitter(self.flip(sample))
        pieces = [t for box, name in zip(sample.boxes, sample.labels, strict=True) for t in self._object(box, name)]
        target = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)
        patch = self.to_tensor(sample.image)
        return self.example(uid, self.encode(DETECTION_PROMPT), target, patch, code_mask=False, conf=V2_CONF)

    def _object(self, box: Tensor, name: str) -> tuple[Tensor, Tensor]:
        return self.bins(box), self.encode(" " + name)
