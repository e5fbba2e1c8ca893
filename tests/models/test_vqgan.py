"""VQGAN image tokenizer (models/vqgan.py) and the offline code writer (data/image_codes.py), on a tiny model."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.image_codes import code_image_tensor, main
from data.images import encode_image_base64
from models.vqgan import VQGAN, VQGANConfig, load_vqgan
from models.vqgan_layers import AttnBlock
from utils.checkpoint import UnsafeCheckpointError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# taming's model.yaml layout (as OFA's vqgan/model.yaml), with the tiny config's sizes
TINY_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.GumbelVQ
  params:
    kl_weight: 1.0e-08
    embed_dim: 32
    n_embed: 64
    monitor: val/rec_loss
    temperature_scheduler_config:
      target: taming.lr_scheduler.LambdaWarmUpCosineScheduler
      params: {warm_up_steps: 0, max_decay_steps: 1000001, lr_start: 0.9, lr_max: 0.9, lr_min: 1.0e-06}
    ddconfig:
      double_z: false
      z_channels: 32
      resolution: 32
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult: [1, 1, 2, 4]
      num_res_blocks: 2
      attn_resolutions: [4]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.DummyLoss
"""


@pytest.fixture(autouse=True)
def _one_thread():
    # after conftest's 2 threads: ops this small are dominated by thread synchronisation on a busy machine
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _tiny(seed: int = 0) -> VQGAN:
    torch.manual_seed(seed)
    return VQGAN(VQGANConfig.tiny()).eval()


def _images(batch: int, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> tuple[VQGAN, Path, Path]:
    """A tiny model and its Lightning-style checkpoint (with loss.* entries) + taming yaml on disk."""
    model = _tiny()
    folder = tmp_path_factory.mktemp("vqgan")
    state = dict(model.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    state["loss.perceptual_loss.net.slice1.0.bias"] = torch.zeros(4)
    torch.save({"epoch": 3, "global_step": 10, "state_dict": state}, folder / "last.ckpt")
    (folder / "model.yaml").write_text(TINY_YAML, encoding="utf-8")
    return model, folder / "last.ckpt", folder / "model.yaml"


# ---- the model ---------------------------------------------------------------------------------------------


def test_encode_gives_one_code_per_8x8_pixels_and_decode_inverts_the_shape():
    model = _tiny()
    codes = model.encode(_images(2))
    assert codes.shape == (2, 4, 4) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    images = model.decode(codes)
    assert images.shape == (2, 3, 32, 32)
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    assert model.encode(_images(1, 32, 48)).shape == (1, 4, 6)  # non-square inputs work too


def test_encode_is_deterministic_and_batch_independent():
    model, images = _tiny(), _images(3)
    codes = model.encode(images)
    assert torch.equal(codes, model.encode(images))
    assert torch.equal(codes[1:2], model.encode(images[1:2]))


def test_sampled_codes_are_seeded_and_equal_argmax_for_peaked_logits():
    model, images = _tiny(), _images(2)
    first = model.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
    again = model.encode(images, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    with torch.no_grad():
        model.quantize.proj.weight.mul_(1e4)  # logits far apart: Gumbel noise cannot change the winner
        model.quantize.proj.bias.mul_(1e4)
    assert torch.equal(model.encode(images, sample=True), model.encode(images))


def test_decode_looks_up_the_codebook_rows():
    model = _tiny()
    codes = torch.tensor([[[0, 5], [63, 5]]])
    quant = model.quantize.lookup(codes)  # (1, D, 2, 2)
    assert torch.equal(quant[0, :, 1, 0], model.quantize.embed.weight[63])
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        model.decode(torch.tensor([[[64]]]))


def test_attention_equals_the_explicit_softmax_formula():
    torch.manual_seed(0)
    block = AttnBlock(32).eval()
    x = torch.randn(2, 32, 3, 5)
    b, c, h, w = x.shape
    normed = block.norm(x)
    q, k, v = (proj(normed).reshape(b, c, h * w) for proj in (block.q, block.k, block.v))
    weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * c**-0.5, dim=2)  # (B, query, key)
    expected = x + block.proj_out(torch.einsum("bcj,bij->bci", v, weights).reshape(b, c, h, w))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_to_pil_maps_minus_one_to_zero_and_one_to_255_truncating():
    images = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    (pil,) = VQGAN.to_pil(images)
    assert pil.mode == "RGB" and pil.size == (4, 1)
    assert np.asarray(pil)[0, :, 0].tolist() == [0, 127, 255, 255]  # 127.5 truncates like astype(uint8)


def test_full_size_state_dict_matches_the_taming_key_list():
    expected = json.loads((FIXTURES / "vqgan_gumbel_f8_keys.json").read_text())
    with torch.device("meta"):
        model = VQGAN(VQGANConfig())
    got = [(key, list(value.shape)) for key, value in model.state_dict().items()]
    assert got == [(e["key"], e["shape"]) for e in expected["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == expected["num_parameters"]


def test_from_yaml_reads_ofas_config(tmp_path):
    text = TINY_YAML.replace("z_channels: 32", "z_channels: 256").replace("resolution: 32", "resolution: 256")
    text = text.replace("ch: 32", "ch: 128").replace("[4]", "[32]").replace("n_embed: 64", "n_embed: 8192")
    (tmp_path / "model.yaml").write_text(text.replace("embed_dim: 32", "embed_dim: 256"), encoding="utf-8")
    assert VQGANConfig.from_yaml(tmp_path / "model.yaml") == VQGANConfig()
    (tmp_path / "bad.yaml").write_text(TINY_YAML.replace("GumbelVQ", "VQModel"), encoding="utf-8")
    with pytest.raises(ValueError, match="bad.yaml: model.target 'taming.models.vqgan.VQModel'"):
        VQGANConfig.from_yaml(tmp_path / "bad.yaml")


# ---- loading -----------------------------------------------------------------------------------------------


def test_lightning_checkpoint_loads_strictly_without_loss_keys(tiny_files, caplog):
    model, ckpt, config = tiny_files
    with caplog.at_level("INFO", logger="models.vqgan"):
        loaded = load_vqgan(ckpt, config)
    assert "dropped 2 loss.* entries" in caplog.text
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    images = _images(2, seed=3)
    assert torch.equal(loaded.encode(images), model.encode(images))
    torch.testing.assert_close(loaded.decode(model.encode(images)), model.decode(model.encode(images)))


def _save_with_class(path: Path, module: str, monkeypatch, state: dict) -> None:
    """Save a checkpoint that pickles a class of ``module`` by reference (the module exists only while saving)."""
    cls = type("ModelCheckpoint", (), {"__module__": module})
    with monkeypatch.context() as patch:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # pickle imports the module, parents first
            patch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        sys.modules[module].ModelCheckpoint = cls
        torch.save({"state_dict": state, "callbacks": {cls: {"best_model_path": "x.ckpt"}}}, path)


def test_pickled_lightning_classes_are_read_as_stand_ins(tiny_files, tmp_path, monkeypatch):
    model, _, config = tiny_files
    ckpt = tmp_path / "pl.ckpt"
    _save_with_class(ckpt, "pytorch_lightning.callbacks.model_checkpoint", monkeypatch, model.state_dict())
    images = _images(1)
    assert torch.equal(load_vqgan(ckpt, config).encode(images), model.encode(images))


def test_other_pickled_classes_are_refused_with_one_line(tiny_files, tmp_path, monkeypatch):
    model, _, config = tiny_files
    ckpt = tmp_path / "evil.ckpt"
    _save_with_class(ckpt, "evil_module", monkeypatch, model.state_dict())
    with pytest.raises(UnsafeCheckpointError) as err:
        load_vqgan(ckpt, config)
    message = str(err.value)
    assert "\n" not in message and str(ckpt) in message and "evil_module.ModelCheckpoint" in message
    assert "re-save only its weights" in message


def test_missing_files_are_named(tiny_files, tmp_path):
    _, ckpt, config = tiny_files
    with pytest.raises(FileNotFoundError, match=f"no VQGAN checkpoint file at {tmp_path / 'nope.ckpt'}"):
        load_vqgan(tmp_path / "nope.ckpt", config)
    with pytest.raises(FileNotFoundError, match=f"no VQGAN config file at {tmp_path / 'nope.yaml'}"):
        load_vqgan(ckpt, tmp_path / "nope.yaml")


def test_a_checkpoint_of_another_config_is_an_error(tiny_files, tmp_path):
    _, ckpt, _ = tiny_files
    (tmp_path / "other.yaml").write_text(TINY_YAML.replace("n_embed: 64", "n_embed: 128"), encoding="utf-8")
    with pytest.raises(ValueError, match="does not match .*other.yaml.*quantize"):
        load_vqgan(ckpt, tmp_path / "other.yaml")


# ---- python -m data.image_codes ----------------------------------------------------------------------------


def _pictures(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate([(40, 40), (48, 36), (32, 32)]):
        pixels = np.random.default_rng(i).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        paths.append(folder / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def _expected_codes(model: VQGAN, path: Path, size: int = 32) -> str:
    tensor = code_image_tensor(Image.open(path), size)
    return " ".join(map(str, model.encode(tensor[None]).flatten().tolist()))


def _run(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out.strip()


def test_image_codes_from_tsv_writes_the_original_layout(tiny_files, tmp_path, capsys):
    model, ckpt, config = tiny_files
    paths = _pictures(tmp_path / "images")
    lines = [f"{100 + i}\t{p.stem}\t{encode_image_base64(Image.open(p))}\tcaption {i}" for i, p in enumerate(paths)]
    lines.insert(1, "99\tbroken\tbm90IGFuIGltYWdl\tbad image")  # base64 of "not an image"
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    flags = ["--vqgan-ckpt", ckpt, "--vqgan-config", config, "--code-image-size", 32, "--device", "cpu"]
    out = _run(capsys, "--tsv", tmp_path / "pairs.tsv", "--out", tmp_path / "codes.tsv", "--batch-size", 2, *flags)
    assert out == f"wrote 3 rows to {tmp_path / 'codes.tsv'} (skipped 1: unreadable image 1)"
    rows = [line.split("\t") for line in (tmp_path / "codes.tsv").read_text().splitlines()]
    assert [row[:3] for row in rows] == [[str(100 + i), p.stem, f"caption {i}"] for i, p in enumerate(paths)]
    assert [row[3] for row in rows] == [_expected_codes(model, p) for p in paths]
    assert [len(row[3].split()) for row in rows] == [16, 20, 16]  # the 36x48 image: 4 x 5 codes, no crop
    assert (
        main(["--tsv", str(tmp_path / "pairs.tsv"), "--out", str(tmp_path / "x.tsv"), "--strict", *map(str, flags)])
        == 1
    )
    assert "pairs.tsv line 2: not an image PIL can read" in capsys.readouterr().err


def test_image_codes_from_a_folder_with_captions(tiny_files, tmp_path, capsys):
    model, ckpt, config = tiny_files
    paths = _pictures(tmp_path / "images")
    records = [{"file": p.name, "caption": f"a picture\tnumber {i}"} for i, p in enumerate(paths)]
    (tmp_path / "captions.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n", encoding="utf-8")
    flags = ["--vqgan-ckpt", ckpt, "--vqgan-config", config, "--code-image-size", 32, "--center-crop"]
    _run(capsys, "--images", tmp_path / "images", "--captions", tmp_path / "captions.jsonl", "--out",
         tmp_path / "gen.tsv", "--layout", "image_gen", *flags)  # fmt: skip
    rows = [line.split("\t") for line in (tmp_path / "gen.tsv").read_text().splitlines()]
    assert [(row[0], row[2]) for row in rows] == [(str(i), f"a picture number {i}") for i in range(3)]
    assert all(len(row[1].split()) == 16 for row in rows)  # --center-crop: every grid is 4 x 4
    _run(capsys, "--images", tmp_path / "images", "--out", tmp_path / "only.tsv", *flags[:-1])
    rows = [line.split("\t") for line in (tmp_path / "only.tsv").read_text().splitlines()]
    assert rows == [[p.stem, _expected_codes(model, p)] for p in paths]


def test_image_codes_reports_missing_inputs_in_one_line(tiny_files, tmp_path, capsys):
    _, ckpt, config = tiny_files
    flags = ["--out", str(tmp_path / "o.tsv"), "--vqgan-ckpt", str(ckpt), "--vqgan-config", str(config)]
    assert main(["--tsv", str(tmp_path / "absent.tsv"), *flags]) == 1
    assert capsys.readouterr().err.strip() == f"error: TSV file {tmp_path / 'absent.tsv'} does not exist"
    (tmp_path / "images").mkdir()
    flags[3] = str(tmp_path / "absent.ckpt")
    assert main(["--images", str(tmp_path / "images"), *flags]) == 1
    assert capsys.readouterr().err.strip() == f"error: no VQGAN checkpoint file at {tmp_path / 'absent.ckpt'}"
