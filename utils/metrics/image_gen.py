"""Text-to-image metrics (spec §4.8): CLIPScore, FID against stored statistics, and the Inception Score.

- CLIPScore (Hessel et al., 2021): ``mean(w * max(cos(image, caption), 0))`` with ``w = 2.5``; the raw mean
  cosine (what OFA's validation and SCST reward use, the reward being ``2.5 * cos``) is reported next to it.
- FID: ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))`` over pool features, the square root by
  ``scipy.linalg.sqrtm`` with the ``eps`` retry of OFA's ``fid_score.py`` (pytorch-fid); the reference set is a
  ``gt_stat.npz`` with ``mu`` and ``sigma``, pytorch-fid's format.
- Inception Score: ``exp(E_x KL(p(y|x) || p(y)))`` over ``splits`` chunks (torch-fidelity's computation).

Feature extractors and classifiers are plain callables ``(B, 3, H, W) float in [0, 1] -> (B, D)`` so tests
inject tiny ones. ``load_inception`` builds Inception-v3 from a local weights file, never downloading:
the FID network (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` or torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth``, run by torch-fidelity), or torchvision's ImageNet network
(``inception_v3_google-*.pth``), which is what OFA's ``fid_score.py`` and ``inception_score.py`` load; with
it the inputs are prepared as those scripts do (see ``InceptionV3``), so statistics those scripts wrote (OFA's
``gt_stat.npz`` presumably among them) stay comparable.
OFA's scripts first resize every PIL image to 299x299 (bilinear); ``image_size`` does the same here.

CLI: ``python -m utils.metrics.image_gen --images DIR --stats gt_stat.npz --inception-weights PATH
[--clip clip/ViT-B-16.pt --captions captions.jsonl]`` prints the metrics it has inputs for as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import linalg
from torch import Tensor, nn
from tqdm import tqdm

if TYPE_CHECKING:
    from models.clip import CLIPScorer

logger = logging.getLogger(__name__)

Extractor = Callable[[Tensor], Tensor]  # (B, 3, H, W) float in [0, 1] -> (B, D)
ImageBatch = Sequence[Image.Image] | Tensor
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CLIPSCORE_WEIGHT = 2.5


class ImageFiles(Sequence[Image.Image]):
    """Image files opened (as RGB) only when indexed, so a folder of 30k samples is never all in memory."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    @classmethod
    def from_dir(cls, root: str | Path) -> ImageFiles:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        return cls(sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...
    @overload
    def __getitem__(self, index: slice) -> list[Image.Image]: ...
    def __getitem__(self, index: int | slice) -> Image.Image | list[Image.Image]:
        if isinstance(index, slice):
            return [_open_rgb(path) for path in self.paths[index]]
        return _open_rgb(self.paths[index])


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def to_pixels(images: ImageBatch, image_size: int | None = None) -> Tensor:
    """``(N, 3, H, W)`` float in [0, 1]. PIL images are resized to ``image_size`` squared (bilinear, as OFA's
    ``transforms.Resize((299, 299))``) when given; tensors (float in [0, 1] or uint8) keep their size."""
    if isinstance(images, Tensor):
        return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if image_size is not None and image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(image, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)


def _batches(images: ImageBatch, batch_size: int, progress: bool) -> Iterator[ImageBatch]:
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, disable=not progress, desc="images", unit="batch"):
        yield images[start : start + batch_size]


@torch.no_grad()
def extract(
    images: ImageBatch,
    extractor: Extractor,
    batch_size: int = 50,
    image_size: int | None = 299,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Tensor:
    """Run ``extractor`` over ``images`` in batches: ``(N, D)`` float64 on the CPU."""
    outputs = [
        extractor(to_pixels(batch, image_size).to(device)).flatten(1).double().cpu()
        for batch in _batches(images, batch_size, progress)
    ]
    if not outputs:
        raise ValueError("no images to score")
    return torch.cat(outputs)


def statistics_from_features(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, like ``np.cov``) of ``(N, D)`` features."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FID statistics need at least 2 feature rows, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def compute_statistics(images: ImageBatch, extractor: Extractor, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """FID statistics ``(mu, sigma)`` of ``images``; ``kwargs`` go to ``extract``."""
    return statistics_from_features(extract(images, extractor, **kwargs))


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` from a ``.npz`` holding arrays ``mu`` and ``sigma`` (OFA's ``gt_stat.npz``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID statistics file not found: {path}")
    with np.load(path) as stats:
        missing = {"mu", "sigma"} - set(stats.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}; it holds {stats.files}")
        return stats["mu"].astype(np.float64), stats["sigma"].astype(np.float64)


def save_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write ``mu`` and ``sigma`` in ``load_statistics``'s (and pytorch-fid's) ``.npz`` format."""
    np.savez(path, mu=mu, sigma=sigma)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2), computed as OFA's ``fid_score.py``."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"FID statistics differ in size: mu {mu1.shape} vs {mu2.shape}")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # A nearly singular product (fewer samples than dimensions): retry on slightly regularised covariances.
        logger.warning("FID: singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.abs(covmean.imag).max():g} in sqrt(sigma1 sigma2)")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(
    images: ImageBatch,
    reference: str | Path | tuple[np.ndarray, np.ndarray],
    extractor: Extractor,
    **kwargs,
) -> float:
    """FID of ``images`` against ``reference``: a statistics ``.npz`` path or ``(mu, sigma)``."""
    mu_ref, sigma_ref = load_statistics(reference) if isinstance(reference, str | Path) else reference
    mu, sigma = compute_statistics(images, extractor, **kwargs)
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)


def inception_score_from_logits(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """Mean and std over ``splits`` consecutive chunks of ``exp(E KL(p(y|x) || p(y)))``; softmax of ``logits``."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    if len(logits) < splits:
        raise ValueError(f"Inception Score with {splits} splits needs at least {splits} images, got {len(logits)}")
    result = isc_features_to_metric(logits.double().cpu(), splits=splits, shuffle=False)
    return result["inception_score_mean"], result["inception_score_std"]


def inception_score(images: ImageBatch, classifier: Extractor, splits: int = 10, **kwargs) -> tuple[float, float]:
    """Inception Score ``(mean, std)`` of ``images``; ``classifier`` returns logits, ``kwargs`` go to ``extract``."""
    return inception_score_from_logits(extract(images, classifier, **kwargs), splits)


def clip_score_stats(
    scorer: CLIPScorer, images: ImageBatch, texts: Sequence[str], weight: float = CLIPSCORE_WEIGHT
) -> dict[str, float]:
    """``clip_score`` = mean of ``weight * max(cos, 0)`` over (image, text) pairs; ``clip_cosine`` = mean cos."""
    if len(images) != len(texts) or not texts:
        raise ValueError(f"CLIPScore pairs images with captions: got {len(images)} images and {len(texts)} captions")
    step = scorer.batch_size
    cosines = torch.cat(
        [scorer.similarity(images[i : i + step], texts[i : i + step]) for i in range(0, len(texts), step)]
    )
    return {
        "clip_score": float((weight * cosines.clamp(min=0)).mean()),
        "clip_cosine": float(cosines.mean()),
    }


def clip_score(scorer: CLIPScorer, images: ImageBatch, texts: Sequence[str], weight: float = CLIPSCORE_WEIGHT) -> float:
    """CLIPScore (Hessel et al.): mean over pairs of ``weight * max(cos(image, text), 0)``."""
    return clip_score_stats(scorer, images, texts, weight)["clip_score"]


class InceptionV3(nn.Module):
    """Inception-v3 for the metrics: ``forward`` gives the ``(B, 2048)`` pool features (FID), ``logits`` the
    class logits (IS); inputs are ``(B, 3, H, W)`` floats in [0, 1].

    ``fid`` layout: torch-fidelity's TF-ported FID network, which resizes to 299 like TensorFlow and uses the
    bias-free logits of the original IS code. ``torchvision`` layout (OFA's scripts): features as OFA's
    ``fid_score.py`` (bilinear resize with ``align_corners=True``, then its per-channel affine map of the
    [0, 1] input), logits as OFA's ``inception_score.py`` (the [0, 1] input fed as is, ``transform_input=False``).
    """

    num_features = 2048  # pool3 width, the FID feature size
    # OFA's fid_score.py maps x -> x * std / 0.5 + (mean - 0.5) / 0.5 with ImageNet's mean/std.
    _OFA_SCALE = torch.tensor([0.229, 0.224, 0.225]) / 0.5
    _OFA_SHIFT = (torch.tensor([0.485, 0.456, 0.406]) - 0.5) / 0.5

    def __init__(self, net: nn.Module, layout: str) -> None:
        super().__init__()
        self.net, self.layout = net.eval().requires_grad_(False), layout

    def forward(self, pixels: Tensor) -> Tensor:
        if self.layout == "fid":
            return self.net(_to_uint8(pixels))[0]
        x = F.interpolate(pixels, size=(299, 299), mode="bilinear", align_corners=True)
        x = x * self._OFA_SCALE.to(x)[:, None, None] + self._OFA_SHIFT.to(x)[:, None, None]
        for name in _TORCHVISION_POOL_PATH:
            x = getattr(self.net, name)(x)
        return x.flatten(1)  # (B, 2048, 1, 1) -> (B, 2048)

    def logits(self, pixels: Tensor) -> Tensor:
        if self.layout == "fid":
            return self.net(_to_uint8(pixels))[1]
        if pixels.shape[-2:] != (299, 299):
            pixels = F.interpolate(pixels, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(pixels)

    def features_and_logits(self, pixels: Tensor) -> Tensor:
        """``(B, 2048 + classes)``: pool features then logits, in one pass where the layout allows."""
        if self.layout == "fid":
            return torch.cat(self.net(_to_uint8(pixels)), dim=1)
        return torch.cat([self(pixels), self.logits(pixels)], dim=1)


_TORCHVISION_POOL_PATH = (
    *("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2"),
    *("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
    *("Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"),
)


def _to_uint8(pixels: Tensor) -> Tensor:
    return (pixels * 255).round().clamp(0, 255).to(torch.uint8)


def load_inception(path: str | Path, device: str | torch.device = "cpu") -> InceptionV3:
    """Inception-v3 from a local weights file; the layout (FID 1008-class or torchvision 1000-class) is read
    from the file. Nothing is downloaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights not found: {path} (give --inception-weights: pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth, torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
            "or torchvision's inception_v3_google-0cc3c7bd.pth)"
        )
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)  # refuses anything but tensors
    except Exception as err:  # unpickling, zip and refusal errors alike: name the file once
        raise ValueError(f"{path} is not a readable Inception-v3 weights file: {err}") from None
    fc = state_dict.get("fc.weight") if isinstance(state_dict, dict) else None
    classes = fc.shape[0] if isinstance(fc, Tensor) else None
    if classes == 1008:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        # torch-fidelity reads the file itself; the weights_only load above already vetted its contents.
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], str(path))
        return InceptionV3(net, "fid").to(device)
    if classes == 1000:
        from torchvision.models import inception_v3

        aux = any(key.startswith("AuxLogits.") for key in state_dict)
        net = inception_v3(weights=None, aux_logits=aux, transform_input=False, init_weights=False)
        net.load_state_dict(state_dict)
        return InceptionV3(net, "torchvision").to(device)
    raise ValueError(f"{path} is not an Inception-v3 state dict (fc.weight rows: {classes}; expected 1008 or 1000)")


def _read_captions(args: argparse.Namespace, folder: ImageFiles) -> tuple[ImageFiles, list[str]]:
    """The (images, captions) pairs to score: a JSONL of ``{"image": name, "caption": text}`` (names relative
    to ``--images``), or OFA's dump names ``{caption}_{j}.png``."""
    if args.captions_from_filenames:
        return folder, [path.stem.rsplit("_", 1)[0] for path in folder.paths]
    root, paths, texts = Path(args.images), [], []
    with open(args.captions, encoding="utf-8") as lines:
        for line in filter(str.strip, lines):
            row = json.loads(line)
            path = root / row["image"]
            if not path.is_file():
                raise FileNotFoundError(f"{args.captions} names an image that is not in {root}: {row['image']}")
            paths.append(path)
            texts.append(row["caption"])
    return ImageFiles(paths), texts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The CLI's flags; a metric whose inputs are incomplete is a usage error, not skipped."""
    parser = argparse.ArgumentParser(prog="python -m utils.metrics.image_gen", description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, help="folder of generated images (searched recursively)")
    parser.add_argument("--stats", help="reference FID statistics .npz with mu and sigma (OFA's gt_stat.npz)")
    parser.add_argument("--inception-weights", help="local Inception-v3 weights (needed for FID and IS)")
    parser.add_argument("--save-stats", help="also write the folder's FID statistics to this .npz")
    parser.add_argument("--splits", type=int, default=1, help="Inception Score splits (OFA's script: 1)")
    parser.add_argument("--clip", help="local CLIP checkpoint for CLIPScore, e.g. clip/ViT-B-16.pt")
    parser.add_argument(
        "--clip-arch", default="ViT-B-16", help="open_clip config the CLIP weights must match ('auto': any)"
    )
    captions = parser.add_mutually_exclusive_group()
    captions.add_argument("--captions", help='JSONL lines {"image": name under --images, "caption": text}')
    captions.add_argument("--captions-from-filenames", action="store_true", help="OFA's {caption}_{j}.png names")
    parser.add_argument("--image-size", type=int, default=299, help="resize images to this square for Inception")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.stats and not args.inception_weights:
        parser.error("--stats (FID) needs --inception-weights")
    if args.clip and not (args.captions or args.captions_from_filenames):
        parser.error("--clip needs --captions or --captions-from-filenames")
    if not (args.inception_weights or args.clip):
        parser.error("nothing to compute: give --inception-weights (FID with --stats, IS) and/or --clip")
    return args


def _inception_metrics(args: argparse.Namespace, folder: ImageFiles) -> dict[str, float]:
    inception = load_inception(args.inception_weights, args.device)
    options = {"batch_size": args.batch_size, "image_size": args.image_size, "device": args.device, "progress": True}
    outputs = extract(folder, inception.features_and_logits, **options)
    features, logits = outputs[:, : inception.num_features], outputs[:, inception.num_features :]
    mu, sigma = statistics_from_features(features)
    score, std = inception_score_from_logits(logits, args.splits)
    metrics = {"inception_score": score, "inception_score_std": std}
    if args.stats:
        metrics["fid"] = frechet_distance(mu, sigma, *load_statistics(args.stats))
    if args.save_stats:
        save_statistics(args.save_stats, mu, sigma)
    return metrics


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Compute the metrics the arguments allow and print them as one JSON object."""
    args = parse_args(argv)
    folder = ImageFiles.from_dir(args.images)
    metrics: dict[str, float] = {"num_images": len(folder)}
    if args.inception_weights:
        metrics |= _inception_metrics(args, folder)
    if args.clip:
        from models.clip import CLIPScorer

        arch = None if args.clip_arch == "auto" else args.clip_arch
        scorer = CLIPScorer.from_local(args.clip, arch=arch, device=args.device)
        images, texts = _read_captions(args, folder)
        metrics |= clip_score_stats(scorer, images, texts)
    sys.stdout.write(json.dumps(metrics) + "\n")
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        main()
    except (FileNotFoundError, ValueError) as err:  # a missing or unreadable input: its one-line message
        sys.exit(f"error: {err}")
