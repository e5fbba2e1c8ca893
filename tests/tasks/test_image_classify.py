"""image_classify (OFA's ImageNet finetuning task): sample layout and masks by hand, transforms, reproducible
augmentation, all-candidate scoring against the original's formula, and train -> evaluate end to end."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import train
from data.images import encode_image_base64
from data.tokenizer import OFATokenizer
from data.tsv import BadRowError
from models import build_model, get_preset
from models.candidates import score_candidates
from models.generate import GenerationConfig
from tasks.base import IMAGENET_MEAN_STD, TASKS
from tasks.image_classify import PROMPT, ImageClassifyConfig, ImageClassifyTask  # registers image_classify
from tests.conftest import BPE_DIR

CLASSES = {"golden retriever": 0, "golden eagle": 1, "tabby cat": 2}  # the first two share " golden"


@pytest.fixture(scope="module")
def tokenizer(bpe_dir):
    return OFATokenizer.from_bpe_dir(bpe_dir)


@pytest.fixture(scope="module")
def task(tokenizer) -> ImageClassifyTask:
    cfg = ImageClassifyConfig(patch_image_size=32, imagenet_default_mean_and_std=True, selected_cols="0,2",
                              ans2label_dict=json.dumps(CLASSES))  # fmt: skip
    return ImageClassifyTask(cfg, tokenizer)


def _raw(seed: int = 0, h: int = 40, w: int = 48) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))


def write_tsv(path, rows: int, seed: int = 0) -> str:
    """OFA's ImageNet TSV layout: image base64, label index, label name (read with --selected-cols 0,2)."""
    rng = np.random.RandomState(seed)
    names = list(CLASSES)
    lines = []
    for i in range(rows):
        label = names[i % 3]
        lines.append(f"{encode_image_base64(_raw(int(rng.randint(1000))))}\t{CLASSES[label]}\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text).tolist()


def _allowed(row: torch.Tensor) -> set[int]:
    return set(row.nonzero().squeeze(1).tolist())


def test_row_to_prompt_target_and_trie_masks(task, tokenizer):
    retriever = _ids(tokenizer, " golden retriever")
    eagle, tabby = _ids(tokenizer, " golden eagle"), _ids(tokenizer, " tabby cat")
    assert retriever[0] == eagle[0] and len(retriever) == 3 and len(eagle) == 2  # a shared first token
    sample = task.build_sample([encode_image_base64(_raw()), "golden retriever"], "valid", 7)
    assert sample["id"] == 7 and sample["ref_dict"] == {"golden retriever": 1.0} and sample["conf"] == 1.0
    assert sample["source"].tolist() == [0, *_ids(tokenizer, PROMPT), 2]
    assert sample["prev_output_tokens"].tolist() == [0, *retriever]
    assert sample["target"].tolist() == [*retriever, 2]
    assert sample["decoder_prompt"] == [0]
    rows = [_allowed(r) for r in sample["constraint_mask"]]  # row i: trie children of prev[: i + 1]
    assert rows == [{retriever[0], tabby[0]}, {retriever[1], eagle[1]}, {retriever[2]}, {2}]


def test_training_labels_must_be_classes_and_rows_need_two_columns(task, tmp_path):
    image = encode_image_base64(_raw())
    with pytest.raises(ValueError, match="expected 2 columns"):
        task.build_sample([image], "valid", 0)
    assert task.build_sample([image, "poodle"], "valid", 0)["ref_dict"] == {"poodle": 1.0}  # scored as wrong
    bad = tmp_path / "bad.tsv"
    bad.write_text(f"{image}\t9\tpoodle\n", encoding="utf-8")
    task.cfg.data = str(bad)
    with pytest.raises(BadRowError, match="line 1: label 'poodle' is not one of the 3"):
        task.dataset("train")[0]


def test_eval_transform_is_a_bicubic_square_resize_with_imagenet_statistics(task):
    raw = _raw(3)
    sample = task.build_sample([encode_image_base64(raw), "tabby cat"], "test", 0)
    resized = np.asarray(raw.resize((32, 32), Image.BICUBIC), dtype=np.float32) / 255
    mean, std = (np.array(v, dtype=np.float32) for v in IMAGENET_MEAN_STD)
    expected = torch.from_numpy(((resized - mean) / std).transpose(2, 0, 1))
    assert torch.allclose(sample["patch_image"], expected, atol=1e-5)


def test_training_images_depend_only_on_seed_epoch_and_index(task, tmp_path):
    task.cfg.data = write_tsv(tmp_path / "train.tsv", 4)
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    state = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    first = task.dataset("train", 1)[2]["patch_image"]
    again = task.dataset("train", 1)[2]["patch_image"]  # a fresh dataset, as after a resume
    assert torch.equal(first, again) and first.shape == (3, 32, 32)
    assert not torch.equal(first, task.dataset("train", 2)[2]["patch_image"])
    assert not torch.equal(first, task.dataset("train", 1)[3]["patch_image"])
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(torch.get_rng_state(), state[2])  # the global streams are untouched
    other_seed = dataclasses.replace(task.cfg, seed=2)
    reseeded = ImageClassifyTask(other_seed, task.tokenizer).dataset("train", 1)[2]["patch_image"]
    assert not torch.equal(first, reseeded)
    valid = task.dataset("valid", 1)  # no augmentation outside training
    assert torch.equal(valid[1]["patch_image"], valid[1]["patch_image"])


def test_training_pipeline_is_timm_then_random_augment(task):
    names = [type(t).__name__ for t in task.train_transform.transforms]
    assert names[1:] == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "RandAugment",
                         "RandomAugment", "MaybeToTensor", "Normalize", "RandomErasing"]  # fmt: skip
    augment = task.train_transform.transforms[4]
    assert (augment.n, augment.m) == (2, 7) and len(augment.augs) == 10


def _original_allcand_scores(model, sample: dict, task: ImageClassifyTask) -> torch.Tensor:
    """The original's eval_image_classify: decode [bos] + answer for each class, mask logits outside the trie
    with -inf, log-softmax, gather the target (answer + eos), sum (no rows zeroed)."""
    enc = model.encode(**sample["net_input"])
    bsz, scores = sample["net_input"]["src_tokens"].size(0), []
    for tokens in task.answer_tokens:
        prev = torch.tensor([[0, *tokens]]).expand(bsz, -1)
        target = torch.tensor([*tokens, 2])
        mask = torch.zeros(len(target), len(task.tokenizer), dtype=torch.bool)
        for i in range(len(target)):
            mask[i, task.trie.get_next_layer(prev[0, : i + 1].tolist())] = True
        logits, _ = model.decoder(prev, enc)
        lprobs = torch.log_softmax(logits.float().masked_fill(~mask, -math.inf), dim=-1)
        scores.append(lprobs[:, torch.arange(len(target)), target].sum(1))
    return torch.stack(scores, 1)


def test_all_candidate_scores_equal_the_originals_formula(task):
    torch.manual_seed(0)
    model = build_model(get_preset("ofa_test").replace(patch_image_size=32)).eval()
    rows = [[encode_image_base64(_raw(s)), name] for s, name in enumerate(CLASSES)]
    sample = task.collate([task.build_sample(r, "valid", i) for i, r in enumerate(rows)])
    ours = score_candidates(model, sample["net_input"], task.candidates, sample["decoder_prompt"])
    original = _original_allcand_scores(model, sample, task)
    assert torch.allclose(ours, original, atol=1e-4)
    preds = task.eval_step(model, sample)
    best = original.argmax(1).tolist()
    assert [p["answer"] for p in preds] == [task.answers[i] for i in best]
    assert [p["uniq_id"] for p in preds] == [0, 1, 2]
    assert [p["score"] for p in preds] == [float(task.answers[b] == r[1]) for b, r in zip(best, rows, strict=True)]
    generator = task.build_generator(GenerationConfig(beam=2, max_len_b=4))
    beams = task.eval_step(model, sample, generator, beam_search=True)  # trie-constrained beam search
    assert all(p["answer"] in CLASSES for p in beams)


def test_registration_config_and_metric():
    entry = TASKS.get("image_classify")
    assert entry.config is ImageClassifyConfig
    names = {f.name for f in dataclasses.fields(ImageClassifyConfig)}
    assert {"ans2label_file", "valid_batch_size", "seed"} <= names
    assert not {"prompt_type", "unconstrained_training"} & names  # fixed, not flags
    assert ImageClassifyTask.metric_name == "score"
    with pytest.raises(ValueError, match="val-inference-type"):
        ImageClassifyTask(ImageClassifyConfig(val_inference_type="greedy", bpe_dir=str(BPE_DIR)))


def test_train_then_evaluate(tmp_path, bpe_dir):
    train_tsv, valid_tsv = write_tsv(tmp_path / "train.tsv", 8), write_tsv(tmp_path / "valid.tsv", 4, seed=1)
    save = tmp_path / "ckpt"
    argv = [f"{train_tsv},{valid_tsv}", "--task", "image_classify", "--arch", "ofa_test", "--bpe-dir", str(bpe_dir),
            "--selected-cols", "0,2", "--patch-image-size", "32", "--batch-size", "4", "--max-update", "2",
            "--lr", "1e-4", "--save-dir", str(save), "--label-smoothing", "0.1", "--seed", "3",
            "--imagenet-default-mean-and-std", "--ans2label-dict", json.dumps(CLASSES),
            "--valid-batch-size", "20"]  # fmt: skip
    assert train.main(argv) == 0
    log = [json.loads(x) for x in (save / "train_log.jsonl").read_text().splitlines()]
    valid = [x for x in log if x["split"] == "valid"]
    assert valid and math.isfinite(valid[-1]["loss"]) and 0 <= valid[-1]["score"] <= 1
    results = tmp_path / "results"
    assert evaluate.main([valid_tsv, "--path", str(save / "checkpoint_last.pt"), "--gen-subset", "val",
                          "--results-path", str(results), "--batch-size", "3"]) == 0  # fmt: skip
    metrics = json.loads((results / "val_metrics.json").read_text())
    assert math.isfinite(metrics["score"]) and 0 <= metrics["score"] <= 1 and metrics["count"] == 4
    predictions = json.loads((results / "val_predict.json").read_text())
    assert sorted(p["uniq_id"] for p in predictions) == [0, 1, 2, 3]
    assert all(set(p) == {"uniq_id", "answer"} and p["answer"] in CLASSES for p in predictions)
