"""Visual-grounding boxes as OFA's ``refcoco`` task quantises, dequantises and scores them.

Reproduces:

* ``RefcocoDataset``: a box in resized-image pixels becomes bins ``int(round(coord / max_image_size *
  (num_bins - 1)))``, computed in float32 with ``torch.round`` (round half to even, like Python's ``round``);
* ``eval_refcoco``: generated bin tokens become ``(token - bin_offset) / (num_bins - 1) * max_image_size`` and are
  divided by the width/height resize ratios (x by ``w_ratio``, y by ``h_ratio``) back to original pixels, in place
  in float32; ``bin_offset`` is the id of ``<bin_0>``, i.e. ``len(dictionary) - num_bins`` in OFA;
* Acc@0.5: intersection ``[max x0, max y0, min x1, min y1]``, ``IoU = inter / (area_p + area_t - inter + 1e-6)``,
  and a hit is ``IoU >= 0.5`` with a positive intersection width *and* height.

``box_iou`` clamps the intersection width and height at zero, so disjoint boxes get 0; OFA's expression does not
clamp (two negative sides multiply to a positive "area"), but its hit test rejects those cases through the
positive-width/height guard, so ``box_hits`` gives exactly OFA's hits. Bins are not clamped to ``[0, num_bins)``,
as in OFA.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

IOU_EPS = 1e-6


def _as_boxes(boxes: Tensor, name: str) -> Tensor:
    if boxes.dim() != 2 or boxes.size(-1) != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    return boxes if boxes.is_floating_point() else boxes.float()


def _intersection(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Unclamped intersection width and height, as OFA computes them."""
    top_left = torch.maximum(pred[:, :2], gt[:, :2])
    bottom_right = torch.minimum(pred[:, 2:], gt[:, 2:])
    size = bottom_right - top_left
    return size[:, 0], size[:, 1]


def box_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """IoU of matching rows of two ``(N, 4)`` ``x0, y0, x1, y1`` box tensors, with OFA's ``+1e-6`` denominator."""
    pred, gt = _as_boxes(pred, "pred"), _as_boxes(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    inter_w, inter_h = _intersection(pred, gt)
    inter = inter_w.clamp(min=0) * inter_h.clamp(min=0)
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    return inter / (area_p + area_t - inter + IOU_EPS)


def box_hits(pred: Tensor, gt: Tensor, threshold: float = 0.5) -> Tensor:
    """OFA's refcoco hit: ``IoU >= threshold`` and a positive intersection width and height (bool, shape ``(N,)``)."""
    iou = box_iou(pred, gt)
    inter_w, inter_h = _intersection(_as_boxes(pred, "pred"), _as_boxes(gt, "gt"))
    return (iou >= threshold) & (inter_w > 0) & (inter_h > 0)


def bins_to_boxes(
    tokens: Tensor, *, bin_offset: int, num_bins: int, max_image_size: int, w_ratio: Tensor, h_ratio: Tensor
) -> Tensor:
    """Boxes in original-image pixels from ``(N, 4)`` generated bin token ids (eos already dropped)."""
    if tokens.dim() != 2 or tokens.size(-1) != 4:
        raise ValueError(f"tokens must have shape (N, 4), got {tuple(tokens.shape)}")
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    boxes = (tokens - bin_offset) / (num_bins - 1) * max_image_size
    boxes[:, ::2] /= torch.as_tensor(w_ratio).reshape(-1, 1)
    boxes[:, 1::2] /= torch.as_tensor(h_ratio).reshape(-1, 1)
    return boxes


def boxes_to_bins(box: Tensor | Sequence[float], *, num_bins: int, max_image_size: int) -> list[int]:
    """Bin indices (not token ids) of one ``x0, y0, x1, y1`` box given in resized-image pixels."""
    coords = torch.as_tensor(box, dtype=torch.float32)
    if coords.shape != (4,):
        raise ValueError(f"box must hold 4 coordinates, got shape {tuple(coords.shape)}")
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    return [int(b) for b in (coords / max_image_size * (num_bins - 1)).round().tolist()]
