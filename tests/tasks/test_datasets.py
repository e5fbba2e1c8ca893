"""Task datasets against values computed by hand from the spec: prompts, target ids, boxes, images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from data.images import encode_image_base64
from data.tokenizer import OFATokenizer
from tasks.base import image_transform, pre_caption
from tasks.caption import CaptionConfig, CaptionTask
from tasks.refcoco import RefcocoConfig, RefcocoTask
from tasks.snli_ve import SnliVeConfig, SnliVeTask
from tasks.vqa_gen import VqaGenConfig, VqaGenTask

BIN0 = 58457


@pytest.fixture(scope="module")
def tokenizer(bpe_dir):
    return OFATokenizer.from_bpe_dir(bpe_dir)


def _image(w: int = 48, h: int = 40, seed: int = 0) -> str:
    return encode_image_base64(Image.fromarray(np.random.RandomState(seed).randint(0, 255, (h, w, 3), dtype=np.uint8)))


def test_golden_image_preprocessing(golden):
    """PIL bicubic resize to S x S + ToTensor + Normalize(0.5, 0.5), on the fixture's non-square image."""
    raw = Image.fromarray(golden["inputs"]["preproc_raw_uint8"].numpy())
    ours = image_transform(64)(raw)
    assert torch.allclose(ours, golden["inputs"]["preproc_patch_image"], atol=1e-6)


def test_golden_caption_sample(golden, tokenizer):
    task = CaptionTask(CaptionConfig(patch_image_size=64, max_tgt_length=20), tokenizer)
    caption = golden["meta"]["captions"][0]
    sample = task.build_sample(["7", _image(), caption + "!"], "train", 0)
    assert sample["source"].tolist() == golden["inputs"]["src_tokens"][0].tolist()
    target = golden["inputs"]["target"][0]
    assert sample["target"].tolist() == target[target.ne(1)].tolist()
    assert sample["prev_output_tokens"].tolist()[0] == 0 and sample["patch_image"].shape == (3, 64, 64)


def test_caption_training_target_strips_punctuation_and_keeps_case(tokenizer):
    task = CaptionTask(CaptionConfig(patch_image_size=32, max_tgt_length=3), tokenizer)
    sample = task.build_sample(["1", _image(), "A dog, runs-fast!"], "train", 0)
    assert sample["target"].tolist() == tokenizer.encode(" A dog runsfast").tolist() + [2]
    valid = task.build_sample(["1", _image(), "A dog.&&two  cats!"], "valid", 0)
    assert valid["references"] == ["A dog", "two cats"]


def test_vqa_sample_prompt_types_confidence_and_constraints(tokenizer):
    cfg = VqaGenConfig(
        patch_image_size=32, prompt_type="prev_output", ans2label_dict='{"blue": 0, "red": 1, "red car": 2}'
    )
    task = VqaGenTask(cfg, tokenizer)
    sample = task.build_sample(["5", _image(), "What  Color is the Car", "0.6|!+red&&1.0|!+blue", "car"], "train", 0)
    question = tokenizer.encode(" what color is the car?").tolist()
    answer = tokenizer.encode(" blue").tolist()
    assert sample["source"].tolist() == [0, *question, 2]
    assert sample["prev_output_tokens"].tolist() == [0, *question, *answer]
    assert sample["target"].tolist() == [1] * len(question) + answer + [2]
    assert sample["conf"] == 1.0 and sample["ref_dict"] == {"red": 0.6, "blue": 1.0}
    mask = sample["constraint_mask"]
    assert not mask[: len(question)].any()  # no constraint (and no loss) on the question positions
    first = set(mask[len(question)].nonzero().squeeze(1).tolist())
    assert first == {tokenizer.encode(" blue")[0].item(), tokenizer.encode(" red")[0].item()}
    assert mask[-1].nonzero().squeeze(1).tolist() == [2]  # after " blue" only eos continues


def test_vqa_bad_answers_column_is_an_error(tokenizer):
    task = VqaGenTask(VqaGenConfig(patch_image_size=32), tokenizer)
    with pytest.raises(ValueError):
        task.build_sample(["5", _image(), "what?", "no-confidence-here", ""], "train", 0)


def test_refcoco_box_bins_follow_the_square_resize(tokenizer):
    task = RefcocoTask(RefcocoConfig(patch_image_size=64, max_image_size=512), tokenizer)
    sample = task.build_sample(["9", _image(w=100, h=50), "The Left Dog", "10,5,60,45"], "train", 0)
    # x scales by 64/100, y by 64/50: (6.4, 6.4, 38.4, 57.6) -> round(c / 512 * 999)
    assert sample["target"].tolist() == [BIN0 + 12, BIN0 + 12, BIN0 + 75, BIN0 + 112, 2]
    prompt = tokenizer.encode(' which region does the text " the left dog " describe?', add_bos=True, add_eos=True)
    assert sample["source"].tolist() == prompt.tolist()
    assert (sample["w_resize_ratio"], sample["h_resize_ratio"]) == (0.64, 1.28)


def test_snli_ve_prompt_and_labels(tokenizer):
    task = SnliVeTask(SnliVeConfig(patch_image_size=32, add_caption=True, prompt_type="prev_output"), tokenizer)
    sample = task.build_sample(["3", _image(), "Two Dogs", "a park", "neutral"], "train", 0)
    prompt = ' can image and text1 " a park " imply text2 " two dogs "?'
    assert sample["source"].tolist() == tokenizer.encode(prompt, add_bos=True, add_eos=True).tolist()
    assert sample["ref_dict"] == {"maybe": 1.0}
    assert sample["target"].tolist()[-2:] == [tokenizer.encode(" maybe")[0].item(), 2]
    with pytest.raises(ValueError, match="label"):
        task.build_sample(["3", _image(), "x", "y", "unsure"], "train", 0)


def test_pre_caption_rules():
    assert pre_caption(",.Hello  <person>-to/you \n", 10) == "hello person to you"
    assert pre_caption("one two three four", 2) == "one two"
