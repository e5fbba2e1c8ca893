"""Referring expression comprehension (OFA ``refcoco``, spec §4.3): the box is generated as 4 ``<bin_i>`` tokens.

TSV after ``--selected-cols``: id, image (base64), expression, box ``"x0,y0,x1,y1"`` in original pixels.
Images are resized to S x S (aspect ratio not kept, bicubic), so x and y scale differently; a coordinate
becomes ``<bin_round(c_resized / max_image_size * (num_bins - 1))>``. Predictions are mapped back to original
pixels and scored by Acc@0.5 IoU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from data.images import decode_base64_image
from tasks.base import TASKS, Task, TaskConfig, pre_caption
from utils.metrics import bins_to_boxes, box_hits, boxes_to_bins

PROMPT = ' which region does the text " {} " describe?'


def check_region(coords: list[float], width: int, height: int) -> None:
    """Refuse a box that is not finite, empty or inverted, or outside the image by more than a pixel.

    OFA takes such boxes as they are and trains on whatever bins (or ``<unk>`` tokens) they give.
    """
    x0, y0, x1, y1 = coords
    if not all(math.isfinite(c) for c in coords):
        raise ValueError(f"region {coords} has a coordinate that is not a finite number")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"region {coords} is empty or inverted (x0,y0,x1,y1 needs x0 < x1 and y0 < y1)")
    if x0 < -1 or y0 < -1 or x1 > width + 1 or y1 > height + 1:
        raise ValueError(f"region {coords} lies outside the {width}x{height} image")


@dataclass
class RefcocoConfig(TaskConfig):
    eval_acc: bool = False
    eval_args: str = '{"beam":5,"min_len":4,"max_len_a":0,"max_len_b":4}'
    eval_print_samples: bool = False
    max_image_size: int = 512
    scst: bool = False
    scst_args: str = "{}"


@TASKS.register("refcoco", RefcocoConfig)
class RefcocoTask(Task):
    passthrough_keys = ("w_resize_ratio", "h_resize_ratio", "region_coord")

    def build_sample(self, row: list[str], split: str, index: int) -> dict[str, Any]:
        if len(row) < 4:
            raise ValueError(f"expected 4 columns (id, image, text, region) after --selected-cols, got {len(row)}")
        uniq_id, image_b64, text, region = row[:4]
        coords = [float(v) for v in region.strip().split(",")]
        if len(coords) != 4:
            raise ValueError(f"region must be 'x0,y0,x1,y1', got {region!r}")
        image = decode_base64_image(image_b64)
        w, h = image.size
        size = self.cfg.patch_image_size
        w_ratio, h_ratio = size / w, size / h
        # float32 throughout, as the original scales its box tensor (matters at rounding boundaries)
        resized = torch.tensor(coords, dtype=torch.float32) * torch.tensor([w_ratio, h_ratio, w_ratio, h_ratio])
        check_region(coords, w, h)
        bins = boxes_to_bins(resized, num_bins=self.cfg.num_bins, max_image_size=self.cfg.max_image_size)
        if min(bins) < 0 or max(bins) >= self.cfg.num_bins:  # OFA would train on <unk> here
            raise ValueError(f"region {region!r} gives bins {bins} outside 0..{self.cfg.num_bins - 1}")
        target = self.encode_text(" ".join(f"<bin_{b}>" for b in bins), use_bpe=False)
        source = self.encode_text(PROMPT.format(pre_caption(text, self.cfg.max_src_length)), bos=True, eos=True)
        return {
            "id": uniq_id,
            "source": source,
            "patch_image": self.patch_transform(image),
            "patch_mask": True,
            "target": torch.cat([target, torch.tensor([self.eos])]),
            "prev_output_tokens": torch.cat([torch.tensor([self.bos]), target]),
            "w_resize_ratio": w_ratio,
            "h_resize_ratio": h_ratio,
            "region_coord": coords,
        }

    def eval_enabled(self) -> bool:
        return self.cfg.eval_acc

    def eval_step(self, model, sample: dict, generator=None, **options) -> list[dict]:
        model.eval()
        generator = generator or self.build_generator()
        hypos = generator.generate(model, sample)
        tokens = torch.stack([h[0]["tokens"][:4] for h in hypos]).cpu()
        boxes = bins_to_boxes(
            tokens, bin_offset=self.tokenizer.bin_offset, num_bins=self.cfg.num_bins,
            max_image_size=self.cfg.max_image_size, w_ratio=torch.tensor(sample["w_resize_ratio"]),
            h_ratio=torch.tensor(sample["h_resize_ratio"]),
        )  # fmt: skip
        hits = box_hits(boxes, torch.tensor(sample["region_coord"]))
        return [
            {"uniq_id": uid, "box": box.tolist(), "score": float(hit)}
            for uid, box, hit in zip(sample["id"], boxes, hits, strict=True)
        ]
