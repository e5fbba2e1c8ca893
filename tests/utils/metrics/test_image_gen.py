"""CLIP scoring and the image-generation metrics: CLIPScore, FID and Inception Score on tiny networks.

Properties over magic numbers: a set's FID against itself is 0, FID is symmetric and matches the closed form
for diagonal covariances, a classifier with one fixed prediction scores IS 1 and confident predictions spread
evenly over C classes score C, CLIPScore is ``2.5 * max(cos, 0)`` averaged. No test touches the network.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from models.clip import CLIPScorer
from utils.metrics import image_gen
from utils.metrics.image_gen import (
    ImageFiles,
    clip_score,
    clip_score_stats,
    compute_statistics,
    fid,
    frechet_distance,
    inception_score,
    load_inception,
    load_statistics,
    save_statistics,
)

CAPTIONS = ["a red square", "a blue circle on grass", "two green triangles", "a dog", "the sea at night"]


@pytest.fixture(scope="module")
def scorer() -> CLIPScorer:
    return CLIPScorer.tiny(seed=0)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def noise_images(count: int, seed: int = 0, size: tuple[int, int] = (40, 48)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(count)]


def tiny_extractor(dim: int = 8, seed: int = 0) -> nn.Module:
    """A fixed random conv net standing in for Inception's pool features."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return net.eval()


# ---------------------------------------------------------------------------------------------------- CLIP


def test_encode_shapes_are_unit_norm_and_tensor_input_matches_pil(scorer):
    images = noise_images(3) + noise_images(1, seed=1, size=(20, 64))
    image_features, text_features = scorer.encode_images(images), scorer.encode_texts(CAPTIONS)
    assert image_features.shape == (4, 32) and text_features.shape == (5, 32)
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(text_features.norm(dim=-1), torch.ones(5))
    pixels = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in images[:3]])  # uint8
    agreement = (scorer.encode_images(pixels) * image_features[:3]).sum(-1)
    assert agreement.min() > 0.99  # same steps on tensors; only the resampling kernels differ slightly


def test_similarity_pairs_each_image_with_its_text(scorer):
    images = noise_images(3)
    expected = (scorer.encode_images(images) * scorer.encode_texts(CAPTIONS[:3])).sum(-1)
    torch.testing.assert_close(scorer.similarity(images, CAPTIONS[:3]), expected)
    with pytest.raises(ValueError, match="3 images and 2 texts"):
        scorer.similarity(images, CAPTIONS[:2])


def test_rerank_ii_sim_puts_the_candidate_equal_to_the_reference_first(scorer):
    candidates = noise_images(5, seed=3)
    order, scores = scorer.rerank(candidates, reference_image=candidates[2].copy(), method="ii_sim")
    assert order[0] == 2
    assert scores[0].item() == pytest.approx(1.0, abs=1e-5)
    independent = scorer.encode_images(candidates) @ scorer.encode_images([candidates[2]])[0]
    assert order == torch.argsort(independent, descending=True).tolist()
    torch.testing.assert_close(scores, independent[order])


def test_rerank_ti_sim_orders_by_cosine_with_the_caption(scorer):
    candidates = noise_images(6, seed=4)
    order, scores = scorer.rerank(candidates, text=CAPTIONS[1])
    independent = scorer.encode_images(candidates) @ scorer.encode_texts([CAPTIONS[1]])[0]
    assert order == torch.argsort(independent, descending=True).tolist()
    torch.testing.assert_close(scores, independent[order])
    assert torch.all(scores[:-1] >= scores[1:])


def test_rerank_rejects_unknown_methods_and_missing_queries(scorer):
    with pytest.raises(ValueError, match="known: ti_sim, ii_sim"):
        scorer.rerank(noise_images(2), text="x", method="cosine")
    with pytest.raises(ValueError, match="caption"):
        scorer.rerank(noise_images(2), method="ti_sim")
    with pytest.raises(ValueError, match="reference image"):
        scorer.rerank(noise_images(2), method="ii_sim")


def test_from_local_round_trips_an_openai_style_state_dict(scorer, tmp_path, no_network):
    path = tmp_path / "tiny_clip.pt"
    torch.save(scorer.model.state_dict(), path)
    loaded = CLIPScorer.from_local(path, arch=None)  # arch=None: take the architecture from the weights
    images = noise_images(2)
    torch.testing.assert_close(loaded.encode_images(images), scorer.encode_images(images), rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_texts(CAPTIONS), scorer.encode_texts(CAPTIONS), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_from_local_reads_a_torchscript_archive_like_openai_ships(scorer, tmp_path, no_network):
    path = tmp_path / "tiny_clip_jit.pt"
    traced = torch.jit.trace_module(scorer.model, {"encode_image": (torch.zeros(1, 3, 32, 32),)}, check_trace=False)
    torch.jit.save(traced, path)
    loaded = CLIPScorer.from_local(path, arch=None)
    torch.testing.assert_close(loaded.encode_texts(CAPTIONS), scorer.encode_texts(CAPTIONS), rtol=0, atol=0)


def test_from_local_checks_the_arch_and_names_bad_files(scorer, tmp_path):
    path = tmp_path / "tiny_clip.pt"
    torch.save(scorer.model.state_dict(), path)
    with pytest.raises(ValueError, match=f"{path} does not hold a CLIP ViT-B-16: embed_dim 32 \\(expected 512\\)"):
        CLIPScorer.from_local(path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent.pt")):
        CLIPScorer.from_local(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{garbage} is not a readable"):
        CLIPScorer.from_local(garbage)


# ----------------------------------------------------------------------------------------------- CLIPScore


class FixedCosines:
    """A scorer stand-in whose cosines are given, to check the CLIPScore formula itself."""

    batch_size = 2

    def __init__(self, cosines: list[float]) -> None:
        self.cosines = torch.tensor(cosines)

    def similarity(self, images, texts) -> Tensor:
        return self.cosines[images]


def test_clip_score_is_weighted_clamped_cosine():
    cosines = [0.5, -0.2, 0.3, 0.1, -0.4]
    stats = clip_score_stats(FixedCosines(cosines), list(range(5)), ["t"] * 5)
    assert stats["clip_score"] == pytest.approx(2.5 * (0.5 + 0 + 0.3 + 0.1 + 0) / 5)
    assert stats["clip_cosine"] == pytest.approx(sum(cosines) / 5)


def test_clip_score_matches_hand_computation_with_tiny_clip(scorer):
    images = noise_images(5, seed=7)
    cosines = (scorer.encode_images(images) * scorer.encode_texts(CAPTIONS)).sum(-1).tolist()
    expected = sum(2.5 * max(c, 0.0) for c in cosines) / len(cosines)
    assert clip_score(scorer, images, CAPTIONS) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="5 images and 4 captions"):
        clip_score(scorer, images, CAPTIONS[:4])


# --------------------------------------------------------------------------------------------------- FID


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # |mu1 - mu2|^2 + sum(v1 + v2 - 2 sqrt(v1 v2)) = (1 + 0 + 6.25) + (4 + 1 + 0)
    expected = 7.25 + 5.0
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_fid_of_a_set_against_itself_is_zero():
    extractor, images = tiny_extractor(), torch.rand(64, 3, 16, 16)
    stats = compute_statistics(images, extractor, batch_size=16)
    assert stats[0].shape == (8,) and stats[1].shape == (8, 8)
    assert abs(fid(images, stats, extractor, batch_size=16)) < 1e-3


def test_fid_of_different_sets_is_positive_symmetric_and_reads_npz(tmp_path):
    extractor = tiny_extractor()
    dark, bright = torch.rand(48, 3, 16, 16) * 0.5, 0.5 + torch.rand(48, 3, 16, 16) * 0.5
    (mu_d, s_d), (mu_b, s_b) = compute_statistics(dark, extractor), compute_statistics(bright, extractor)
    forward, backward = frechet_distance(mu_d, s_d, mu_b, s_b), frechet_distance(mu_b, s_b, mu_d, s_d)
    assert forward > 1e-2
    assert forward == pytest.approx(backward, rel=1e-6)
    save_statistics(tmp_path / "gt_stat.npz", mu_b, s_b)
    assert fid(dark, tmp_path / "gt_stat.npz", extractor) == pytest.approx(forward, rel=1e-9)


def test_pil_images_are_resized_to_a_common_size():
    extractor = tiny_extractor()
    images = noise_images(4, size=(40, 48)) + noise_images(4, seed=1, size=(16, 16))
    mu, sigma = compute_statistics(images, extractor, image_size=24, batch_size=3)
    assert mu.shape == (8,) and np.isfinite(sigma).all()


def test_statistics_files_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "gt_stat.npz")):
        load_statistics(tmp_path / "gt_stat.npz")
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="lacks \\['sigma'\\]"):
        load_statistics(tmp_path / "bad.npz")


# ---------------------------------------------------------------------------------------- Inception Score


def test_inception_score_of_a_constant_prediction_is_one():
    def constant(pixels: Tensor) -> Tensor:
        return torch.tensor([2.0, -1.0, 0.5, 0.0]).expand(len(pixels), 4)

    mean, std = inception_score(torch.rand(20, 3, 8, 8), constant, splits=2)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_evenly_spread_predictions_is_the_class_count():
    classes = 5
    # image i is a flat grey at level (i % 5) / 4; the classifier is sure of that level
    levels = torch.arange(50) % classes / (classes - 1)
    images = levels[:, None, None, None].expand(50, 3, 8, 8)

    def confident(pixels: Tensor) -> Tensor:
        level = pixels.mean(dim=(1, 2, 3))[:, None]  # (B, 1)
        return -1e4 * (level - torch.arange(classes) / (classes - 1)) ** 2  # (B, classes)

    mean, std = inception_score(images, confident, splits=5, batch_size=7)
    assert mean == pytest.approx(classes, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------ Inception-v3 loading


def test_load_inception_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"Inception weights not found: {tmp_path / 'absent.pth'}"):
        load_inception(tmp_path / "absent.pth")
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=f"{tmp_path / 'other.pth'} is not an Inception-v3 state dict"):
        load_inception(tmp_path / "other.pth")


@pytest.mark.parametrize(("classes", "layout"), [(1008, "fid"), (1000, "torchvision")])
def test_load_inception_reads_both_layouts_from_local_files(tmp_path, no_network, classes, layout):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=classes == 1000, num_classes=classes, init_weights=False)
    torch.save(net.state_dict(), tmp_path / "inception.pth")
    # torchvision's key names are pytorch-fid's: its FID file loads into torch-fidelity's network as well
    inception = load_inception(tmp_path / "inception.pth")
    assert inception.layout == layout
    if layout == "fid":  # the torchvision layout's input handling is checked without the full network below
        with torch.no_grad():
            outputs = inception.features_and_logits(torch.rand(1, 3, 32, 32))
        assert outputs.shape == (1, 2048 + classes) and torch.isfinite(outputs).all()
    else:
        assert inception.net.fc.out_features == 1000 and not inception.net.transform_input


class PassThroughInception(nn.Module):
    """torchvision's Inception3 attribute names, every block the identity: shows what the network is fed."""

    def __init__(self) -> None:
        super().__init__()
        for name in image_gen._TORCHVISION_POOL_PATH:
            self.add_module(name, nn.Identity())

    def forward(self, pixels: Tensor) -> Tensor:
        return pixels.flatten(1)


def test_torchvision_layout_feeds_the_inputs_ofa_scripts_feed():
    inception = image_gen.InceptionV3(PassThroughInception(), "torchvision")
    white = torch.ones(1, 3, 10, 10)
    # fid_score.py: resize to 299, then x * std / 0.5 + (mean - 0.5) / 0.5 with ImageNet's mean and std
    features = inception(white).view(3, 299, 299)
    expected = [1 * 0.229 / 0.5 + (0.485 - 0.5) / 0.5, 0.224 / 0.5 + (0.456 - 0.5) / 0.5, 0.225 / 0.5 - 0.094 / 0.5]
    torch.testing.assert_close(features[:, 0, 0], torch.tensor(expected))
    # inception_score.py: the [0, 1] image as it is (already 299 x 299 after its PIL resize)
    grey = torch.full((1, 3, 299, 299), 0.25)
    torch.testing.assert_close(inception.logits(grey), grey.flatten(1))


# ---------------------------------------------------------------------------------------------------- CLI


class TinyInception(nn.Module):
    """Stands in for ``load_inception``'s network in the CLI test: 8 features, 4 classes."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.features, self.head = tiny_extractor(), nn.Linear(8, 4)

    def features_and_logits(self, pixels: Tensor) -> Tensor:
        features = self.features(pixels)
        return torch.cat([features, self.head(features)], dim=1)


def test_cli_prints_fid_is_and_clip_score(scorer, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "top1"
    folder.mkdir()
    for index, image in enumerate(noise_images(12, size=(24, 24))):
        image.save(folder / f"{CAPTIONS[index % 5]}_{index}.png")
    torch.save(scorer.model.state_dict(), tmp_path / "clip.pt")
    (tmp_path / "inception.pth").write_bytes(b"")  # the tiny stand-in below replaces the real loader
    monkeypatch.setattr(image_gen, "load_inception", lambda path, device: TinyInception().eval())
    common = ["--images", str(folder), "--inception-weights", str(tmp_path / "inception.pth"), "--image-size", "16"]
    image_gen.main([*common, "--save-stats", str(tmp_path / "gt_stat.npz")])
    names = sorted(path.name for path in folder.iterdir())
    (tmp_path / "captions.jsonl").write_text(
        "".join(json.dumps({"image": n, "caption": "a dog"}) + "\n" for n in names)
    )
    capsys.readouterr()
    clip_args = [
        "--clip",
        str(tmp_path / "clip.pt"),
        "--clip-arch",
        "auto",
        "--captions",
        str(tmp_path / "captions.jsonl"),
    ]
    image_gen.main([*common, "--stats", str(tmp_path / "gt_stat.npz"), *clip_args])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_images"] == 12 and abs(metrics["fid"]) < 1e-3 and metrics["inception_score"] >= 1.0
    expected = clip_score(scorer, ImageFiles(sorted(folder.iterdir())), ["a dog"] * 12)
    assert metrics["clip_score"] == pytest.approx(expected, abs=1e-6)
    # OFA's top1 dump names its images "{caption}_{j}.png"
    clip_args = ["--clip", str(tmp_path / "clip.pt"), "--clip-arch", "auto", "--captions-from-filenames"]
    metrics = image_gen.main(["--images", str(folder), *clip_args])
    files = ImageFiles.from_dir(folder)
    captions = [path.name.rsplit("_", 1)[0] for path in files.paths]
    assert set(captions) == set(CAPTIONS)
    assert metrics["clip_cosine"] == pytest.approx(float(scorer.similarity(files[:], captions).mean()), abs=1e-6)


def test_cli_refuses_incomplete_inputs(tmp_path):
    for argv in (["--images", "x", "--stats", "gt.npz"], ["--images", "x"], ["--images", "x", "--clip", "c.pt"]):
        with pytest.raises(SystemExit):
            image_gen.parse_args(argv)
