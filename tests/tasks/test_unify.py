"""Pretraining (``unify_task``, spec §4.9): every example kind against prompts and targets written out by hand,
the 1-in-8 mixing and the v1/v2 batches, reproducibility, disjoint shards, and a few end-to-end updates."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train
from criterions import build_criterion
from data.images import decode_base64_image, encode_image_base64
from data.loading import SkippingCollater, SkippingDataset, pop_bad_rows
from data.tokenizer import OFATokenizer
from data.tsv import BadRowError, epoch_batches
from models import build_model, get_preset
from tasks.unify_task import UnifyConfig, UnifyTask
from tests.conftest import BPE_DIR

BIN0, CODE0, MASK = 58457, 50265, 50264  # <bin_0>, <code_0>, <mask> in OFA's English vocabulary
CAPTION = "Two striped-cats, on the table!"
NEG_CAPTIONS = ["A blue sky", "big dog in the park"]
OBJECTS = ["cat", "dog", "park"]
TYPE2ANS = {"how many": ["1", "2", "3"], "color": ["red", "blue"], "other": ["yes", "no", "maybe"]}


def _png(w: int, h: int, seed: int) -> str:
    return encode_image_base64(Image.fromarray(np.random.RandomState(seed).randint(0, 255, (h, w, 3), np.uint8)))


def vl_row(i: int) -> str:
    """Image-text rows: 0 caption, 1 qa, 2 grounding, 3 a cc12m caption, then the three kinds in turn."""
    kinds = ["caption", "qa", "visual_grounding"]
    kind = kinds[i % 3] if i != 3 else "caption"
    refs = "30,8,46,24" if kind == "visual_grounding" else "0.6|!+3&&1.0|!+2"
    dataset = "cc12m" if i == 3 else "coco"
    return "\t".join([str(i), _png(48, 40, i), CAPTION, "How many Cats are there", refs, "cats", dataset, kind])


@pytest.fixture(scope="module")
def pretrain_dir(tmp_path_factory) -> Path:
    """OFA's pretrain_data layout: four TSVs (16 / 8 / 4 / 4 rows) and negative_sample/."""
    root = tmp_path_factory.mktemp("pretrain_data")
    (root / "vision_language_examples.tsv").write_text("\n".join(vl_row(i) for i in range(16)) + "\n")
    texts = [f"t{i}\tHello World, again {i} " for i in range(8)]
    (root / "text_examples.tsv").write_text("\n".join(texts) + "\n")
    images = [f"i{i}\t{_png(32, 32, 100 + i)}\t5 0 8191 7" for i in range(4)]
    (root / "image_examples.tsv").write_text("\n".join(images) + "\n")
    boxes = "0,0,32,32,1,cat&&0,0,32,32,7,red dog"
    (root / "detection_examples.tsv").write_text("\n".join(f"d{i}\t{_png(32, 32, 200 + i)}\t{boxes}" for i in range(4)))
    negatives = root / "negative_sample"
    negatives.mkdir()
    (negatives / "all_captions.txt").write_text("\n".join(NEG_CAPTIONS) + "\n\n")
    (negatives / "object.txt").write_text("\n".join(OBJECTS) + "\n")
    (negatives / "type2ans.json").write_text(json.dumps(TYPE2ANS))
    return root


@pytest.fixture(scope="module")
def tokenizer(bpe_dir) -> OFATokenizer:
    return OFATokenizer.from_bpe_dir(bpe_dir)


def config(root: Path, **overrides) -> UnifyConfig:
    values = dict(
        data=str(root / "vision_language_examples.tsv"), text_data=str(root / "text_examples.tsv"),
        image_data=str(root / "image_examples.tsv"), detection_data=str(root / "detection_examples.tsv"),
        neg_sample_dir=str(root / "negative_sample"), patch_image_size=32, code_image_size=16,
    )  # fmt: skip
    return UnifyConfig(**(values | overrides))


@pytest.fixture(scope="module")
def task(pretrain_dir, tokenizer) -> UnifyTask:
    return UnifyTask(config(pretrain_dir), tokenizer)


def ids(tok: OFATokenizer, text: str) -> list[int]:
    return tok.encode(text).tolist()


def with_bos_eos(body: list[int]) -> list[int]:
    return [0, *body, 2]


# ---------------------------------------------------------------------------------------------- example kinds
def test_caption_example(task, tokenizer):
    item = task.dataset("valid")[0]
    assert item["v2"] == [] and len(item["v1"]) == 1  # outside training: no matching example, no mixing
    ex = item["v1"][0]
    caption = ids(tokenizer, " two striped cats, on the table!")  # pre_caption: lower case, '-' -> ' '
    assert ex["source"].tolist() == with_bos_eos(ids(tokenizer, " what does the image describe?"))
    assert ex["target"].tolist() == caption + [2] and ex["prev_output_tokens"].tolist() == [0, *caption]
    assert ex["conf"] == 1.0 and ex["patch_mask"] and "code_mask" not in ex
    assert ex["patch_image"].shape == (3, 32, 32)


def test_cc12m_caption_does_not_train_its_first_two_tokens(task, tokenizer):
    ex = task.dataset("valid")[3]["v1"][0]
    caption = ids(tokenizer, " two striped cats, on the table!")
    assert ex["target"].tolist() == [1, 1, *caption[2:], 2] and ex["prev_output_tokens"].tolist() == [0, *caption]


def test_qa_example_weights_the_best_answer(task, tokenizer):
    ex = task.dataset("valid")[1]["v1"][0]
    assert ex["source"].tolist() == with_bos_eos(ids(tokenizer, " how many cats are there"))  # no '?' added
    assert ex["target"].tolist() == ids(tokenizer, " 2") + [2] and ex["conf"] == 1.0


def test_image_text_matching_positives_and_negatives(task, tokenizer):
    """Caption row 0 and qa row 1 over many epochs: `` yes`` with the truth, `` no`` with a negative drawn
    from all_captions.txt, an object substitution, or a same-type/"other" answer."""
    caption_prompt = ' does the image describe " {} "?'
    qa_prompt = ' what is the answer to question " how many cats are there ". is " {} "?'
    truth = {0: caption_prompt.format("two striped cats, on the table!"), 1: qa_prompt.format("2")}
    substituted = [CAPTION.replace("cats", o) for o in ("cat", "dog", "park")]
    shown = [" ".join(c.lower().replace("-", " ").split()) for c in NEG_CAPTIONS + substituted]
    wrong_answers = ("1", "3", "yes", "no")  # 2 +- 1 or another "how many" answer; an "other" one but the last
    negatives = {0: {caption_prompt.format(c) for c in shown}, 1: {qa_prompt.format(a) for a in wrong_answers}}
    seen = {(row, answer): set() for row in (0, 1) for answer in ("yes", "no")}
    for epoch in range(1, 13):
        dataset = task.dataset("train", epoch)
        for row in (0, 1):
            main, itm = dataset[row]["v1"]
            answer = tokenizer.decode(itm["target"]).strip()
            prompt = tokenizer.decode(itm["source"])
            if answer == "yes":
                assert prompt == truth[row]
            else:
                assert answer == "no" and prompt in negatives[row]
            assert itm["patch_image"] is main["patch_image"] and itm["conf"] == main["conf"]
            seen[row, answer].add(prompt)
    assert all(seen.values())  # both answers for both kinds
    assert len(seen[0, "no"]) > 1


def test_grounding_and_grounded_captioning(pretrain_dir, tokenizer):
    """S = 480 leaves RandomResize one size: the 48 x 40 image becomes 576 x 480 (x12), the box 30,8,46,24 becomes
    360,96,552,288; ObjectCenterCrop centres on x = 456 and shifts inside: left 96, top 0 -> box 264,96,456,288;
    bins round(c / 512 * 999) = 515, 187, 890, 562."""
    task = UnifyTask(config(pretrain_dir, patch_image_size=480), tokenizer)
    main, region = task.dataset("train")[2]["v1"]
    bins = [BIN0 + b for b in (515, 187, 890, 562)]
    prompt = ids(tokenizer, ' which region does the text " two striped cats, on the table! " describe?')
    assert main["source"].tolist() == with_bos_eos(prompt)
    assert main["target"].tolist() == bins + [2] and main["prev_output_tokens"].tolist() == [0, *bins]
    region_prompt = ids(tokenizer, "  what does the region describe? region:")  # two leading spaces
    assert region["source"].tolist() == with_bos_eos(region_prompt + bins)
    assert region["target"].tolist() == ids(tokenizer, " two striped cats, on the table!") + [2]
    image = decode_base64_image(vl_row(2).split("\t")[1])
    expected = image.resize((576, 480), Image.BICUBIC).crop((96, 0, 576, 480))
    pixels = torch.from_numpy(np.array(expected)).permute(2, 0, 1).float() / 255 * 2 - 1
    assert torch.allclose(main["patch_image"], pixels, atol=1e-6) and region["patch_image"] is main["patch_image"]


def test_text_infilling_example(pretrain_dir, tokenizer, task):
    prefix = ids(tokenizer, ' what is the complete text of " "?')
    text = ids(tokenizer, " hello world, again 0")  # stripped and lower-cased
    unmasked = UnifyTask(config(pretrain_dir, mask_ratio=0.0), tokenizer)
    plain = unmasked.examples.pure_text(["t0", "Hello World, again 0 "])
    assert plain["source"].tolist() == with_bos_eos(prefix[:-2] + text + prefix[-2:])
    assert plain["target"].tolist() == text + [2] and plain["prev_output_tokens"].tolist() == [0, *text]
    assert plain["conf"] == 2.0 and not plain["patch_mask"] and plain["code_mask"] is False
    assert torch.equal(plain["patch_image"], torch.zeros(3, 32, 32))
    masked = task.dataset("train")[7]["v2"][0]
    source = masked["source"].tolist()
    assert source[: len(prefix) - 1] == [0, *prefix[:-2]] and source[-3:] == [*prefix[-2:], 2]
    assert MASK in source and masked["target"].tolist() == text + [2]


def test_image_infilling_example(task, tokenizer):
    ex = task.dataset("train")[7]["v2"][2]
    assert ex["id"] == "i0"
    assert ex["source"].tolist() == with_bos_eos(ids(tokenizer, " what is the image in the middle part?"))
    assert ex["target"].tolist() == [CODE0 + 5, CODE0, CODE0 + 8191, CODE0 + 7, 2]
    assert ex["code_mask"] is True and ex["patch_mask"] and ex["conf"] == 2.0
    image = np.array(decode_base64_image(_png(32, 32, 100)))
    pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255 * 2 - 1
    pixels[:, 8:24, 8:24] = 0  # the centre 16 x 16 of the 2c = 32 image
    assert torch.allclose(ex["patch_image"], pixels, atol=1e-6)


def test_detection_example(task, tokenizer):
    """Boxes covering the whole 32 x 32 image stay 0,0,32,32 whatever the flip and jitter draw; / 512 * 999 =
    62.44 -> bin 62; each box's 4 bins then the BPE of its name."""
    ex = task.dataset("train")[7]["v2"][3]
    box = [BIN0, BIN0, BIN0 + 62, BIN0 + 62]
    target = box + ids(tokenizer, " cat") + box + ids(tokenizer, " red dog")
    assert ex["id"] == "d0"
    assert ex["source"].tolist() == with_bos_eos(ids(tokenizer, " what are the objects in the image?"))
    assert ex["target"].tolist() == target + [2] and ex["code_mask"] is False and ex["conf"] == 2.0
    assert ex["patch_image"].shape == (3, 32, 32)


# ---------------------------------------------------------------------------------------------- mixing and batches
def test_every_eighth_row_brings_two_texts_an_image_and_a_detection(task):
    dataset = task.dataset("train", epoch=1)
    sides = {i: [ex["id"] for ex in dataset[i]["v2"]] for i in range(16)}
    assert sides[7] == ["t0", "t1", "i0", "d0"] and sides[15] == ["t2", "t3", "i1", "d1"]
    assert all(not sides[i] for i in range(16) if i not in (7, 15))
    assert [ex["id"] for ex in task.dataset("train", epoch=2)[7]["v2"]] == ["t4", "t5", "i2", "d2"]  # next rows
    assert all(len(dataset[i]["v1"]) == 2 for i in range(16))  # each row adds ITM or grounded captioning


def test_collater_returns_v1_and_v2_batches(task):
    dataset = task.dataset("train")
    v1, v2 = task.collate([dataset[i] for i in range(4, 8)])
    assert v1["nsentences"] == 8 and "code_masks" not in v1["net_input"]
    assert v1["net_input"]["patch_images"].shape == (8, 3, 32, 32) and v1["conf"].shape == (8,)
    assert v2["net_input"]["code_masks"].tolist() == [False, False, True, False]
    assert v2["net_input"]["patch_masks"].tolist() == [False, False, True, True]
    assert v2["conf"].tolist() == [2.0] * 4 and v2["ntokens"] == int(v2["target"].ne(1).sum())
    alone = task.collate([dataset[i] for i in range(4)])
    assert isinstance(alone, dict) and alone["nsentences"] == 8  # no v2 example: a plain batch, as the original


# ---------------------------------------------------------------------------------------------- reproducibility
def _stream(dataset, indices) -> list[tuple]:
    out = []
    for i in indices:
        item = dataset[i]
        for ex in item["v1"] + item["v2"]:
            out.append((ex["id"], ex["source"].tolist(), ex["target"].tolist(), ex["patch_image"]))
    return out


def _same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(x[:3] == y[:3] and torch.equal(x[3], y[3]) for x, y in zip(a, b, strict=True))


def test_same_seed_same_stream_other_seed_other_stream(pretrain_dir, tokenizer, task):
    again = UnifyTask(config(pretrain_dir), tokenizer)
    assert _same(_stream(task.dataset("train"), range(16)), _stream(again.dataset("train"), range(16)))
    other = UnifyTask(config(pretrain_dir, seed=2), tokenizer)
    assert not _same(_stream(task.dataset("train"), range(16)), _stream(other.dataset("train"), range(16)))
    assert not _same(_stream(task.dataset("train"), [0]), _stream(task.dataset("train", epoch=2), [0]))


def test_two_ranks_read_disjoint_rows(task):
    dataset, seen = task.dataset("train"), []
    for rank in range(2):
        batches = epoch_batches(len(dataset), 4, epoch=1, seed=1, rank=rank, world_size=2)
        seen.append({ex["id"] for batch in batches for i in batch for ex in dataset[i]["v1"] + dataset[i]["v2"]})
    assert not seen[0] & seen[1]
    assert {str(i) for i in range(16)} <= seen[0] | seen[1]


def test_workers_see_disjoint_rows_and_the_same_stream(task):
    dataset = task.dataset("train")
    batches = epoch_batches(len(dataset), 4, epoch=1, seed=1)

    def load(workers: int) -> list:
        options = {"batch_sampler": batches, "collate_fn": task.collate, "num_workers": workers}
        return list(torch.utils.data.DataLoader(dataset, **options))

    single, parallel = load(0), load(2)
    side_ids = [i for batch in parallel if isinstance(batch, list) for i in batch[1]["id"]]
    assert len(side_ids) == len(set(side_ids)) == 8  # no side row read twice across workers
    for a, b in zip(single, parallel, strict=True):
        for part_a, part_b in zip(*(x if isinstance(x, list) else [x] for x in (a, b)), strict=True):
            assert part_a["id"] == part_b["id"]
            assert torch.equal(part_a["net_input"]["src_tokens"], part_b["net_input"]["src_tokens"])
            assert torch.equal(part_a["net_input"]["patch_images"], part_b["net_input"]["patch_images"])


# ---------------------------------------------------------------------------------------------- errors
def test_bad_rows_and_settings_are_reported(pretrain_dir, tokenizer, tmp_path):
    bad = tmp_path / "vl.tsv"
    bad.write_text(vl_row(0).replace("\tcaption", "\tpuzzle") + "\n")
    with pytest.raises(BadRowError, match=r"vl.tsv at line 1: unknown example type 'puzzle'"):
        UnifyTask(config(pretrain_dir, data=str(bad)), tokenizer).dataset("train")[0]
    with pytest.raises(ValueError, match="--neg-sample-dir"):
        UnifyTask(config(pretrain_dir, neg_sample_dir=None), tokenizer)
    with pytest.raises(FileNotFoundError, match="--image-data .*nothing.tsv does not exist"):
        UnifyTask(config(pretrain_dir, image_data=str(tmp_path / "nothing.tsv")), tokenizer)
    with pytest.raises(ValueError, match="--keep-ratio"):
        UnifyTask(config(pretrain_dir, keep_ratio=0.1), tokenizer)
    wrong = UnifyTask(config(pretrain_dir, code_image_size=8), tokenizer)  # image rows must then be 16 x 16
    with pytest.raises(BadRowError, match=r"image_examples.tsv at line 1: image_data images must be 16x16"):
        wrong.dataset("train")[7]


# ---------------------------------------------------------------------------------------------- training
def test_loss_decreases_on_a_repeated_pretraining_batch(task):
    batch = task.collate([task.dataset("train")[i] for i in range(4, 8)])
    torch.manual_seed(0)
    cfg = get_preset("ofa_test").replace(vocab_size=len(task.tokenizer), patch_image_size=32, code_image_size=16)
    model = build_model(dataclasses.replace(cfg, dropout=0.0))
    criterion = build_criterion("adjust_label_smoothed_cross_entropy", {"sample_patch_num": 2})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):
        pair = [{**batch[0], "net_input": dict(batch[0]["net_input"])}, batch[1]]
        loss, size, log = criterion(model, pair)
        assert size == 1 and log["sample_size_v1"] > 0 and log["sample_size_v2"] > 0
        assert pair[0]["net_input"]["sample_patch_num"] == 2 and "sample_patch_num" not in batch[1]["net_input"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses


@pytest.mark.usefixtures("bpe_dir")  # trains with the GPT-2 BPE files of ../shared
def test_pretraining_runs_end_to_end(pretrain_dir, tmp_path):
    """8 rows, batch 8: every update sees row 7, i.e. a v1 and a v2 batch; the log keeps both losses."""
    data = tmp_path / "vl.tsv"
    data.write_text("\n".join(vl_row(i) for i in range(8)) + "\n")
    save = tmp_path / "ckpt"
    argv = [str(data), "--task", "unify_task", "--arch", "ofa_test", "--bpe-dir", str(BPE_DIR),
            "--selected-cols", "0,1,2,3,4,5,6,7", "--text-data", str(pretrain_dir / "text_examples.tsv"),
            "--image-data", str(pretrain_dir / "image_examples.tsv"),
            "--detection-data", str(pretrain_dir / "detection_examples.tsv"),
            "--neg-sample-dir", str(pretrain_dir / "negative_sample"), "--patch-image-size", "32",
            "--code-image-size", "16", "--sample-patch-num", "2", "--batch-size", "8", "--max-update", "2",
            "--lr", "1e-4", "--log-interval", "1", "--disable-validation", "--save-dir", str(save)]  # fmt: skip
    assert train.main(argv) == 0
    log = [json.loads(line) for line in (save / "train_log.jsonl").read_text().splitlines()]
    assert [entry["num_updates"] for entry in log] == [1, 2]
    for entry in log:
        assert entry["sample_size"] == 1 and entry["sample_size_v1"] > 0 and entry["sample_size_v2"] > 0
        assert all(math.isfinite(entry[k]) for k in ("loss", "loss_v1", "loss_v2"))
        assert entry["loss"] == pytest.approx(entry["loss_v1"] + entry["loss_v2"], rel=1e-4)
    assert (save / "checkpoint_last.pt").exists()


def test_skipped_rows_are_reported_from_a_pair_batch(task):
    """--skip-bad-rows with a [v1, v2] batch: the report rides on v1 and pop_bad_rows takes it out."""
    dataset = task.dataset("train")

    class Flaky(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, index: int):
            if index == 5:
                raise BadRowError("vl.tsv", 6, "broken")
            return dataset[index]

    rows = SkippingDataset(Flaky(), limit=1)
    batch = SkippingCollater(task.collate)([rows[i] for i in range(4, 8)])
    assert isinstance(batch, list) and batch[0]["nsentences"] == 6  # rows 4, 6, 7 with their second examples
    assert pop_bad_rows(batch) == ["bad row in vl.tsv at line 6: broken"] and "bad_rows" not in batch[0]
