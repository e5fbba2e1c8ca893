"""The image_gen task and clip_scst_reward_criterion: row layouts and targets, a few training steps, sampling that
emits exactly (size/8)^2 code tokens reproducibly, CLIP reranking with written PNGs, and the CLIP-SCST loss
against a hand computation. Tiny random VQGAN and CLIP models of the real architectures stand in for the
released weights."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import predict
import train
from criterions import build_criterion
from data.images import encode_image_base64
from models import build_model, get_preset
from models.clip import CLIPScorer
from models.generate import GenerationConfig
from models.vqgan import VQGAN, VQGANConfig
from tasks.image_gen import PROMPT, ImageGenConfig, ImageGenTask
from tests.models.test_vqgan import TINY_YAML
from utils.checkpoint import load_checkpoint_file

CODE0 = 50265  # <code_0> in OFA's English vocabulary


@pytest.fixture(scope="module")
def tokenizer(bpe_dir):
    from data.tokenizer import OFATokenizer

    return OFATokenizer.from_bpe_dir(bpe_dir)


def make_task(tokenizer, size: int = 32, **cfg) -> ImageGenTask:
    cfg = ImageGenConfig(code_image_size=size, constraint_range="50265,58457", **cfg)
    return ImageGenTask(cfg, tokenizer)


def tiny_vqgan() -> VQGAN:
    torch.manual_seed(0)
    return VQGAN(dataclasses.replace(VQGANConfig.tiny(), n_embed=8192)).eval()


def tiny_model(task: ImageGenTask):
    torch.manual_seed(1)
    cfg = get_preset("ofa_test").replace(vocab_size=len(task.tokenizer), code_image_size=task.cfg.code_image_size)
    return build_model(cfg).eval()


def codes_text(rng: np.random.RandomState, count: int) -> str:
    return " ".join(str(v) for v in rng.randint(0, 8192, count))


def test_row_layouts_prompt_and_targets(tokenizer):
    task = make_task(tokenizer, size=32, max_src_length=3)
    codes = list(range(8185, 8192)) + list(range(9))  # 16 codes for a 32 px image
    three = task.build_sample(["7", "A  red   bus on the road", " ".join(map(str, codes))], "train", 0)
    expected_src = tokenizer.encode(PROMPT.format("A red bus"), add_bos=True, add_eos=True).tolist()
    assert three["source"].tolist() == expected_src
    assert task.code_offset == CODE0
    assert three["target"].tolist() == [CODE0 + c for c in codes] + [2]
    assert three["prev_output_tokens"].tolist() == [0] + [CODE0 + c for c in codes]
    assert three["caption"] == "A red bus" and three["code_image"] is None
    two = task.build_sample(["8", "a cat"], "test", 0)
    assert two["target"].tolist() == [CODE0] * 16 + [2]
    four = task.build_sample(["9", "IMG", "a dog", " ".join(map(str, codes))], "test", 0)
    assert four["code_image"] == "IMG" and four["target"].tolist() == three["target"].tolist()
    batch = task.collate([three, two])
    assert batch["net_input"]["code_masks"].tolist() == [True, True] and "patch_images" not in batch["net_input"]


@pytest.mark.parametrize(
    "row, message",
    [
        (["1", "cap", "1 2 3"], "expected 16 codes"),
        (["1", "cap", " ".join(["8192"] * 16)], "[0, 8192)"),
        (["1", "cap", "a b"], "space-separated integers"),
        (["1"], "expected 2, 3 or 4 columns"),
    ],
)
def test_bad_rows_are_named(tokenizer, row, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        make_task(tokenizer).build_sample(row, "train", 0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, bpe_dir):
    """A tiny image_gen checkpoint (16 codes per 32 px image) trained 3 updates on synthetic codes."""
    root = tmp_path_factory.mktemp("image_gen")
    rng = np.random.RandomState(0)
    tsv = root / "codes.tsv"
    tsv.write_text("".join(f"{i}\t{codes_text(rng, 16)}\ta small picture number {i}\n" for i in range(6)))
    save = root / "ckpt"
    argv = [f"{tsv},{tsv}", "--task", "image_gen", "--arch", "ofa_test", "--bpe-dir", str(bpe_dir), "--selected-cols",
            "0,2,1", "--code-image-size", "32", "--constraint-range", "50265,58457", "--batch-size", "3",
            "--max-update", "3", "--lr", "1e-3", "--save-dir", str(save), "--disable-validation",
            "--log-interval", "1"]  # fmt: skip
    assert train.main(argv) == 0
    return save


def test_trains_a_few_steps_on_synthetic_codes(trained):
    log = [json.loads(x) for x in (trained / "train_log.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in log if x["split"] == "train"]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
    state = load_checkpoint_file(trained / "checkpoint_last.pt")
    assert state["cfg"]["model"].code_image_size == 32 and state["cfg"]["task"]["code_image_size"] == 32


def test_predict_generate_image_cli(trained, tmp_path, capsys):
    vqgan = tiny_vqgan()
    torch.save({"state_dict": vqgan.state_dict()}, tmp_path / "last.ckpt")
    (tmp_path / "model.yaml").write_text(TINY_YAML.replace("n_embed: 64", "n_embed: 8192"), encoding="utf-8")
    argv = ["generate-image", "a red bus", "two cats", "--path", trained / "checkpoint_last.pt", "--out",
            tmp_path / "gen", "--num-samples", "3", "--seed", "5", "--vqgan-model-path", tmp_path / "last.ckpt",
            "--vqgan-config-path", tmp_path / "model.yaml"]  # fmt: skip
    assert predict.main([str(a) for a in argv]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["a red bus", "two cats"] and all(r["task"] == "generate-image" for r in rows)
    for row in rows:
        assert len(row["images"]) == 3 and row["scores"] is None
        for path in row["images"]:
            with Image.open(path) as image:
                assert image.format == "PNG" and image.size == (32, 32)
    first = [np.asarray(Image.open(p)) for p in rows[0]["images"]]
    assert predict.main([str(a) for a in argv]) == 0  # the same seed gives the same images
    again = [np.asarray(Image.open(p)) for p in json.loads(capsys.readouterr().out.splitlines()[0])["images"]]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert predict.main([str(a) for a in argv[:-2]]) == 2
    assert "generate-image needs --vqgan-config-path" in capsys.readouterr().err


def _generate(task, model, seed: int, beam: int = 2):
    sample = task.collate([task.build_sample(["0", "a red bus"], "test", 0)])
    generator = task.build_generator(GenerationConfig(beam=beam, sampling_topk=256, seed=seed))
    return [h["tokens"] for h in generator.generate(model, sample)[0]]


@pytest.fixture
def one_thread():
    """1,025 tiny decoder steps are dominated by per-op thread synchronisation: one thread is ~2-9x faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sampling_emits_exactly_1024_code_tokens_reproducibly(tokenizer, one_thread):
    task = make_task(tokenizer, size=256)
    model = tiny_model(task)
    first, again, other = _generate(task, model, 3), _generate(task, model, 3), _generate(task, model, 4)
    for tokens in first:
        assert tokens.numel() == 1025 and tokens[-1].item() == 2
        assert bool(((tokens[:-1] >= CODE0) & (tokens[:-1] < CODE0 + 8192)).all())
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_generation_length_must_match_the_image(tokenizer):
    with pytest.raises(ValueError, match="exactly 16 codes"):
        make_task(tokenizer).build_generator(GenerationConfig(max_len_b=1024))


def test_eval_step_reranks_with_clip_and_writes_pngs(tokenizer, tmp_path):
    task = make_task(tokenizer, size=32, sampling_times=2, gen_images_path=str(tmp_path / "gen"))
    task.vqgan, task.clip = tiny_vqgan(), CLIPScorer.tiny()
    model = tiny_model(task)
    sample = task.collate([task.build_sample(["5", "a red bus", codes_text(np.random.RandomState(1), 16)], "test", 0)])
    images = task.generate_images(model, sample, task.build_generator(GenerationConfig(beam=3, seed=11)))[0]
    assert len(images) == 6 and all(im.size == (32, 32) for im in images)
    features = task.clip.encode_images(images) @ task.clip.encode_texts(["a red bus"]).T  # (6, 1) cosines
    best = int(features.view(-1).argmax())
    [record] = task.eval_step(model, sample, task.build_generator(GenerationConfig(beam=3, seed=11)))
    assert record["uniq_id"] == 5 and record["score"] == pytest.approx(float(features.max()), abs=1e-5)
    all_results = sorted((tmp_path / "gen" / "all_results").glob("*.png"))
    assert len(all_results) == 6 and [p.name for p in (tmp_path / "gen" / "top1").glob("*.png")] == ["a red bus_0.png"]
    with Image.open(tmp_path / "gen" / "top1" / "a red bus_0.png") as top:
        assert np.array_equal(np.asarray(top.convert("RGB")), np.asarray(images[best]))


def test_ii_sim_ranks_the_reference_image_first(tokenizer):
    task = make_task(tokenizer, eval_clip_method="ii_sim")
    task.clip = CLIPScorer.tiny()
    rng = np.random.RandomState(2)
    images = [Image.fromarray(rng.randint(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    order, scores = task.rerank(images, "unused", encode_image_base64(images[2]))
    assert order[0] == 2 and scores[0] == pytest.approx(1.0, abs=1e-4)
    assert list(scores) == sorted(scores, reverse=True)
    with pytest.raises(ValueError, match="4-column layout"):
        task.rerank(images, "unused", None)


class FixedGenerator:
    """Returns the same hypotheses for every call (the SCST criterion's generator hook)."""

    def __init__(self, hyps: list[list[torch.Tensor]]):
        self.hyps = hyps

    def generate(self, model, sample):
        return [[{"tokens": t} for t in row] for row in self.hyps]


def test_clip_scst_loss_equals_the_formula(tokenizer):
    task = make_task(tokenizer, size=16)  # 4 codes per image
    task.vqgan, task.clip = tiny_vqgan(), CLIPScorer.tiny()
    model = tiny_model(task)
    rows = [task.build_sample([str(i), cap, "0 0 0 0"], "train", i) for i, cap in enumerate(["a cat", "two dogs"])]
    sample = task.collate(rows)
    rng = np.random.RandomState(3)
    hyps = [[torch.tensor([*(CODE0 + rng.randint(0, 8192, 4)), 2]) for _ in range(3)] for _ in range(2)]
    criterion = build_criterion(
        "clip_scst_reward_criterion", {"constraint_range": "50265,58457"}, task.pad, task.eos, task=task
    )
    criterion.generator = FixedGenerator(hyps)
    loss, sample_size, log = criterion(model, sample)

    flat = [h for row in hyps for h in row]  # 6 images, 3 per caption
    images = task.vqgan.to_pil(task.vqgan.decode(torch.stack([h[:4] - CODE0 for h in flat]).view(6, 2, 2)))
    img = task.clip.encode_images(images)
    txt = task.clip.encode_texts(["a cat"] * 3 + ["two dogs"] * 3)
    reward = 2.5 * (img * txt).sum(-1).double().view(2, 3)  # (captions, samples)
    advantage = (reward - (reward.sum(1, keepdim=True) - reward) / 2).view(-1)
    model.train()
    prev = torch.stack([torch.cat([torch.tensor([0]), h[:-1]]) for h in flat])
    logits = model(sample["net_input"]["src_tokens"].repeat_interleave(3, 0), prev_output_tokens=prev,
                   code_masks=torch.ones(6, dtype=torch.bool))[0]  # fmt: skip
    logits[:, :, 4:CODE0] = -math.inf
    logits[:, :, 58457:] = -math.inf
    picked = F.log_softmax(logits.float(), -1).gather(-1, torch.stack(flat).unsqueeze(-1)).squeeze(-1)  # (6, 5)
    expected = -(picked.double() * advantage[:, None]).sum()
    assert sample_size == 30 and log["nsentences"] == 6
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert log["score"] == pytest.approx(float(reward.sum()), rel=1e-6)
    assert criterion.captions({"net_input": sample["net_input"]}) == ["a cat", "two dogs"]
