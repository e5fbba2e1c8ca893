"""Grounding boxes: IoU / Acc@0.5 hits with OFA's semantics, bin quantisation and dequantisation, accuracy."""

from __future__ import annotations

import pytest
import torch

from utils.metrics import accuracy, bins_to_boxes, box_hits, box_iou, boxes_to_bins


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_identical_boxes():
    box = _t([0, 0, 10, 10])
    iou = box_iou(box, box)
    assert iou.dtype == torch.float32
    assert iou.item() == pytest.approx(1.0, abs=1e-6)
    assert box_hits(box, box).tolist() == [True]


def test_disjoint_boxes():
    # diagonal: OFA's unclamped product of the two negative sides would be a positive "area" (IoU ~1),
    # the clamped IoU is 0 and the hit test rejects it either way
    pred = _t([0, 0, 1, 1], [0, 0, 10, 10])
    gt = _t([2, 2, 3, 3], [20, 0, 30, 10])
    assert box_iou(pred, gt).tolist() == [0.0, 0.0]
    assert box_hits(pred, gt).tolist() == [False, False]


def test_touching_edges_are_not_hits():
    pred = _t([0, 0, 10, 10], [0, 0, 10, 10])
    gt = _t([10, 0, 20, 10], [0, 10, 10, 20])
    assert box_iou(pred, gt).tolist() == [0.0, 0.0]
    assert box_hits(pred, gt, threshold=0.0).tolist() == [False, False]


def test_partial_overlap_by_hand():
    pred = _t([0, 0, 4, 4], [0, 0, 10, 10], [1, 1, 5, 7])
    gt = _t([2, 0, 6, 4], [0, 0, 10, 6], [3, 2, 9, 6])
    # inter 8 / union 24; inter 60 / union 100; inter 2*4=8 / (24 + 24 - 8)
    expected = [8 / (16 + 16 - 8 + 1e-6), 60 / (100 + 60 - 60 + 1e-6), 8 / (24 + 24 - 8 + 1e-6)]
    assert box_iou(pred, gt).tolist() == pytest.approx(expected, abs=1e-6)
    assert box_hits(pred, gt).tolist() == [False, True, False]
    assert box_hits(pred, gt, threshold=0.3).tolist() == [True, True, False]


def test_iou_exactly_half_in_float32_is_a_hit():
    # in float32 (OFA's dtype) 100 + 1e-6 rounds to 100, so IoU is exactly 0.5 and counts as a hit
    pred, gt = _t([0, 0, 10, 10]), _t([0, 0, 10, 5])
    assert box_iou(pred, gt).item() == 0.5
    assert box_hits(pred, gt).tolist() == [True]
    # in float64 the 1e-6 survives and the same boxes miss
    assert box_hits(pred.double(), gt.double()).tolist() == [False]


def test_integer_boxes_and_shape_errors():
    assert box_iou(torch.tensor([[0, 0, 2, 2]]), torch.tensor([[0, 0, 2, 2]])).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        box_iou(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="same shape"):
        box_iou(torch.zeros(2, 4), torch.zeros(3, 4))


def test_boxes_to_bins_rounds_half_to_even():
    # 511 / 512 * 999 = 997.05 -> 997
    # num_bins 3, max 4: coord / 4 * 2 -> 0.5, 1.5, 2.5, 3.5 -> 0, 2, 2, 4 (int(x + 0.5) would give 1, 2, 3, 4)
    assert boxes_to_bins([1.0, 3.0, 5.0, 7.0], num_bins=3, max_image_size=4) == [0, 2, 2, 4]
    assert boxes_to_bins(torch.tensor([0.0, 256.0, 511.0, 512.0]), num_bins=1000, max_image_size=512) == [
        0,
        500,
        997,
        999,
    ]
    with pytest.raises(ValueError, match="4 coordinates"):
        boxes_to_bins([1.0, 2.0, 3.0], num_bins=1000, max_image_size=512)


def test_bins_to_boxes_by_hand():
    offset = 50265
    tokens = torch.tensor([[offset, offset + 999, offset + 999, offset]])
    boxes = bins_to_boxes(
        tokens,
        bin_offset=offset,
        num_bins=1000,
        max_image_size=512,
        w_ratio=torch.tensor([0.5]),
        h_ratio=torch.tensor([2.0]),
    )
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[0.0, 256.0, 1024.0, 0.0]]


def test_round_trip_with_different_ratios():
    # images of 640x427 and 300x900 resized to 512x512: x and y use different ratios
    num_bins, max_size, offset = 1000, 512, 58457 - 1000
    originals = _t([100.5, 50.25, 600.0, 400.75], [10.0, 700.0, 290.0, 899.0])
    w_ratio = torch.tensor([512 / 640, 512 / 300], dtype=torch.float32)
    h_ratio = torch.tensor([512 / 427, 512 / 900], dtype=torch.float32)
    scale = torch.stack([w_ratio, h_ratio, w_ratio, h_ratio], dim=1)
    resized = originals * scale
    bins = torch.tensor([boxes_to_bins(row, num_bins=num_bins, max_image_size=max_size) for row in resized])
    back = bins_to_boxes(
        bins + offset, bin_offset=offset, num_bins=num_bins, max_image_size=max_size, w_ratio=w_ratio, h_ratio=h_ratio
    )
    expected = bins / (num_bins - 1) * max_size / scale
    assert torch.allclose(back, expected, rtol=0, atol=1e-4)
    half_bin = 0.5 * max_size / (num_bins - 1) / scale
    assert bool(((back - originals).abs() <= half_bin + 1e-3).all())
    assert box_hits(back, originals).all()


def test_bins_to_boxes_errors():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        bins_to_boxes(
            torch.zeros(4, dtype=torch.long),
            bin_offset=0,
            num_bins=1000,
            max_image_size=512,
            w_ratio=torch.ones(1),
            h_ratio=torch.ones(1),
        )


def test_accuracy():
    assert accuracy(torch.tensor([True, False, True, True])) == 0.75
    assert accuracy([1.0, 0.0]) == 0.5
    with pytest.raises(ValueError, match="empty"):
        accuracy([])
