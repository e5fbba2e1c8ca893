"""CLIP scoring for text-to-image generation: reranking sampled images and the SCST reward (spec §4.8, §5.4).

OFA loads OpenAI's CLIP ViT-B/16 (``clip/ViT-B-16.pt``, a TorchScript archive) to rank the images it samples for
a caption (``eval_clip_method``: ``ti_sim`` compares each image with the caption, ``ii_sim`` with the reference
image) and, in image-gen stage 2, to reward samples with ``2.5 * cos(image, caption)``. The network, the
tokenizer and the architecture inference come from ``open_clip``; the checkpoint is either the TorchScript
archive OpenAI ships or a plain state dict in OpenAI's key layout, and the architecture is read from its
shapes. Nothing here names a pretrained tag or a hub id, so nothing is downloaded.

Images go through CLIP's own preprocessing: resize the short side to the model's input size (bicubic), center
crop, OpenAI's mean/std. PIL images take exactly OpenAI's ``preprocess`` path; tensors (float in [0, 1] or
uint8, ``(N, 3, H, W)``, e.g. decoded VQGAN images) take the same steps on tensors. Texts use CLIP's BPE
(open_clip's ``SimpleTokenizer``, the same vocabulary and cleaning as OpenAI's ``clip.tokenize``); a text
longer than the context is truncated (its end-of-text token kept) where OpenAI's tokenizer would raise.

The model runs in float32; OpenAI's ``clip.load`` keeps float16 weights on a GPU, so OFA's scores there differ
in the low digits.
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms

logger = logging.getLogger(__name__)

RERANK_METHODS = ("ti_sim", "ii_sim")
# A tiny member of the same family for tests: ViT image tower + causal text transformer, QuickGELU like OpenAI's.
# Widths are multiples of 64 because OpenAI's layout does not store head counts: readers infer width // 64.
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}

ImageBatch = Sequence[Image.Image] | Tensor


class CLIPScorer(nn.Module):
    """A CLIP model with its tokenizer and preprocessing; every output embedding is L2-normalised."""

    def __init__(self, model: open_clip.CLIP, batch_size: int = 64) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.image_size = _image_size(model)
        self.batch_size = batch_size
        self.tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
        mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
        self.pil_transform = open_clip.image_transform(self.image_size, is_train=False, mean=mean, std=std)
        self.tensor_transform = transforms.Compose(
            [
                transforms.Resize(self.image_size, transforms.InterpolationMode.BICUBIC, antialias=True),
                transforms.CenterCrop(self.image_size),
                transforms.Normalize(mean, std),
            ]
        )

    @classmethod
    def from_local(
        cls, path: str | Path, arch: str | None = "ViT-B-16", device: str | torch.device = "cpu"
    ) -> CLIPScorer:
        """Load an OpenAI-format CLIP checkpoint (TorchScript archive or state dict) from ``path``; float32.

        ``arch`` names an open_clip config the weights must match (``None``: accept what the weights describe).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"CLIP checkpoint not found: {path}")
        try:
            state_dict = _read_state_dict(path)
            # open_clip infers the architecture from the shapes but loads into float16 weights (OpenAI's release
            # is float16); loading again into the float32 model keeps float32 checkpoints exact.
            model = open_clip.model.build_model_from_openai_state_dict(dict(state_dict), cast_dtype=None).float()
            model.load_state_dict(state_dict)
        except Exception as err:  # the readers raise many types (zip, pickle, key, shape errors); name the file
            raise ValueError(f"{path} is not a readable OpenAI-format CLIP checkpoint: {err}") from None
        if arch is not None:
            _check_arch(model, arch, path)
        logger.info("CLIP from %s: %d px images, %d-d embeddings", path, _image_size(model), _embed_dim(model))
        return cls(model).to(device)

    @classmethod
    def tiny(cls, seed: int = 0) -> CLIPScorer:
        """A tiny random CLIP (32 px images, 2-layer towers) for tests; the global RNG is left untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.CLIP(**TINY_CONFIG, quick_gelu=True)
        return cls(model)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def preprocess(self, images: ImageBatch) -> Tensor:
        """PIL images or an ``(N, 3, H, W)`` tensor -> normalised ``(N, 3, S, S)`` model input."""
        if isinstance(images, Tensor):
            pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
            return self.tensor_transform(pixels)
        return torch.stack([self.pil_transform(image) for image in images])

    @torch.no_grad()
    def encode_images(self, images: ImageBatch) -> Tensor:
        """``(N, D)`` unit-norm image embeddings, computed ``batch_size`` images at a time."""
        chunks = [
            self.model.encode_image(self.preprocess(images[i : i + self.batch_size]).to(self.device), normalize=True)
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, _embed_dim(self.model), device=self.device)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """``(N, D)`` unit-norm text embeddings; texts longer than the context are truncated (eot kept)."""
        tokens = self.tokenizer(list(texts)).to(self.device)  # (N, context_length)
        chunks = [
            self.model.encode_text(tokens[i : i + self.batch_size], normalize=True)
            for i in range(0, len(tokens), self.batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, _embed_dim(self.model), device=self.device)

    def similarity(self, images: ImageBatch, texts: Sequence[str]) -> Tensor:
        """Cosine similarity of each image with the text at the same position: ``(N,)``."""
        if len(images) != len(texts):
            raise ValueError(f"similarity pairs images with texts: got {len(images)} images and {len(texts)} texts")
        return (self.encode_images(images) * self.encode_texts(texts)).sum(-1)

    def rerank(
        self,
        images: ImageBatch,
        text: str | None = None,
        reference_image: Image.Image | Tensor | None = None,
        method: str = "ti_sim",
    ) -> tuple[list[int], Tensor]:
        """Order candidate images best first, as OFA's ``eval_clip_method`` does.

        ``ti_sim``: cosine with ``text``; ``ii_sim``: cosine with ``reference_image``. Returns the candidate
        indices best first and their scores in the same order.
        """
        if method == "ti_sim":
            if text is None:
                raise ValueError("rerank method 'ti_sim' needs the caption text")
            query = self.encode_texts([text])
        elif method == "ii_sim":
            if reference_image is None:
                raise ValueError("rerank method 'ii_sim' needs a reference image")
            reference = reference_image[None] if isinstance(reference_image, Tensor) else [reference_image]
            query = self.encode_images(reference)
        else:
            raise ValueError(f"unknown rerank method {method!r}; known: {', '.join(RERANK_METHODS)}")
        scores = self.encode_images(images) @ query[0]  # (N,)
        sorted_scores, order = torch.sort(scores, descending=True, stable=True)
        return order.tolist(), sorted_scores


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Weights of a TorchScript archive (OpenAI's release) or of a plain state dict (optionally under
    ``state_dict`` with DDP's ``module.`` prefix); plain files are read with ``weights_only=True``."""
    if _is_torchscript(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit.load is deprecated, but it is OpenAI's format
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        state_dict = state_dict.get("state_dict", state_dict)
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    # Scalars OpenAI's archive stores, and the causal mask that a traced open_clip model keeps as state.
    for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
        state_dict.pop(key, None)
    return state_dict


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _image_size(model: open_clip.CLIP) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def _embed_dim(model: open_clip.CLIP) -> int:
    return model.text_projection.shape[1]


def _check_arch(model: open_clip.CLIP, arch: str, path: Path) -> None:
    """Compare the loaded weights' shapes with open_clip's config for ``arch``; raise naming both on mismatch."""
    config = open_clip.get_model_config(arch)
    if config is None:
        raise ValueError(f"unknown CLIP arch {arch!r}; known: {', '.join(open_clip.list_models())}")
    vision, text = config["vision_cfg"], config["text_cfg"]
    if "patch_size" not in vision or "width" not in text:
        raise ValueError(f"CLIP arch {arch!r} is not an OpenAI-layout ViT; pass arch=None to read it from the weights")
    if not isinstance(model.visual, open_clip.transformer.VisionTransformer):
        raise ValueError(f"{path} does not hold a CLIP {arch}: its image tower is {type(model.visual).__name__}")
    expected = {
        "embed_dim": config["embed_dim"],
        "image_size": vision["image_size"],
        "patch_size": vision["patch_size"],
        "vision_width": vision["width"],
        "vision_layers": vision["layers"],
        "text_width": text["width"],
        "text_layers": text["layers"],
    }
    conv = model.visual.conv1.weight  # (width, 3, patch, patch)
    found = {
        "embed_dim": _embed_dim(model),
        "image_size": _image_size(model),
        "patch_size": conv.shape[-1],
        "vision_width": conv.shape[0],
        "vision_layers": len(model.visual.transformer.resblocks),
        "text_width": model.transformer.width,
        "text_layers": len(model.transformer.resblocks),
    }
    wrong = {key: (found[key], value) for key, value in expected.items() if found[key] != value}
    if wrong:
        details = ", ".join(f"{key} {got} (expected {want})" for key, (got, want) in wrong.items())
        raise ValueError(f"{path} does not hold a CLIP {arch}: {details}")
