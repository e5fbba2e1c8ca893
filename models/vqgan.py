"""OFA's image tokenizer: taming-transformers' ``GumbelVQ`` VQGAN (f=8, 8,192 codes), inference only.

OFA's ``image_gen`` task (spec section 4.8) turns an image into a grid of discrete codes with the VQGAN of
Esser et al. 2021 (config ``vqgan/model.yaml``, weights ``vqgan/last.ckpt["state_dict"]``) and back:

* ``encode``: image in [-1, 1] -> encoder -> ``quant_conv`` -> ``quantize.proj`` logits (one per code) ->
  indices, (B, 3, H, W) -> (B, H/8, W/8). The original takes the indices that taming's ``GumbelQuantize``
  returns, which even in eval mode are ``argmax(logits + Gumbel noise)``, a *sample*. Here the default is
  the deterministic ``argmax(logits)``; ``sample=True`` reproduces the original's sampling.
* ``decode``: indices -> ``quantize.embed`` rows (B, embed_dim, h, w) -> ``post_quant_conv`` -> decoder ->
  clamp to [-1, 1] (OFA's ``decode_code`` followed by the clamp of its ``custom_to_pil``).
* ``to_pil``: ``(x + 1) / 2 * 255`` truncated to uint8, RGB, as OFA's ``custom_to_pil``.

Module names reproduce taming's state-dict keys (``encoder.*``, ``decoder.*``, ``quantize.proj``,
``quantize.embed``, ``quant_conv``, ``post_quant_conv``), so the released checkpoint loads with
``strict=True`` once the training-only ``loss.*`` entries (discriminator, LPIPS) are dropped.
``load_vqgan`` reads the file with ``torch.load(weights_only=True)``; the pickled Lightning objects of a
training checkpoint (callback classes used as dict keys) are read as inert stand-ins, nothing else is
allowed, and no code from the file ever runs.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image
from torch import Tensor, nn

from models.vqgan_layers import Decoder, Encoder, gumbel_argmax
from utils.checkpoint import CorruptCheckpointError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

# model.target values of a taming config this module builds (taming's own, and OFA's vendored copy)
GUMBEL_TARGETS = ("taming.models.vqgan.GumbelVQ", "models.taming.models.vqgan.GumbelVQ")
# modules whose pickled classes may appear in a Lightning checkpoint; they are replaced by _LightningStub
_LIGHTNING_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")
# ddconfig keys taming's Encoder/Decoder require, and the defaults of the optional ones (as taming sets them)
_REQUIRED_DDCONFIG = ("ch", "out_ch", "num_res_blocks", "attn_resolutions", "in_channels", "resolution", "z_channels")
_TAMING_DEFAULTS: dict[str, Any] = {"ch_mult": (1, 2, 4, 8), "double_z": True, "dropout": 0.0}
# ddconfig options with one supported value (other values change the architecture)
_FIXED_DDCONFIG: dict[str, Any] = {"resamp_with_conv": True, "give_pre_end": False, "tanh_out": False}


@dataclass
class VQGANConfig:
    """taming's ``model.params``: the ``ddconfig`` fields plus ``n_embed``/``embed_dim``. Defaults: OFA's model."""

    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    dropout: float = 0.0
    in_channels: int = 3
    resolution: int = 256
    z_channels: int = 256
    double_z: bool = False
    n_embed: int = 8192
    embed_dim: int = 256
    kl_weight: float = 1e-8  # training only (the quantizer's KL term); kept to mirror the yaml

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if self.z_channels != self.embed_dim:
            # taming builds quantize.proj for z_channels inputs but feeds it quant_conv's embed_dim channels
            raise ValueError(f"GumbelVQ needs z_channels == embed_dim, got {self.z_channels} and {self.embed_dim}")
        if self.ch % 32 or any((self.ch * m) % 32 for m in self.ch_mult):
            raise ValueError(f"every width ch * ch_mult must be a multiple of 32 (GroupNorm groups), got ch={self.ch}")

    @property
    def downsample_factor(self) -> int:
        """Pixels per code along each side (8 for OFA's model)."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def tiny(cls) -> "VQGANConfig":
        """A small model with the real layer structure (4 levels, attention at the latent size), for tests."""
        return cls(ch=32, resolution=32, attn_resolutions=(4,), z_channels=32, embed_dim=32, n_embed=64)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "VQGANConfig":
        """Parse taming's ``model.yaml`` (``model.target`` a GumbelVQ, ``model.params.ddconfig`` ...)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no VQGAN config file at {path}")
        try:
            model = yaml.safe_load(path.read_text(encoding="utf-8"))["model"]
            target, params = model["target"], dict(model["params"])
            ddconfig = dict(params["ddconfig"])
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} is not a taming model.yaml ({type(err).__name__}: {err})") from None
        if target not in GUMBEL_TARGETS:
            raise ValueError(f"{path}: model.target {target!r} is not one of {', '.join(GUMBEL_TARGETS)}")
        if params.get("remap") is not None:
            raise ValueError(f"{path}: index remapping (params.remap) is not supported")
        missing = [key for key in _REQUIRED_DDCONFIG if key not in ddconfig]
        missing += [key for key in ("n_embed", "embed_dim") if key not in params]
        if missing:
            raise ValueError(f"{path}: model.params lacks {', '.join(missing)}")
        unsupported = {k: v for k, v in ddconfig.items() if k in _FIXED_DDCONFIG and v != _FIXED_DDCONFIG[k]}
        if unsupported:
            raise ValueError(f"{path}: unsupported ddconfig values {unsupported} (supported: {_FIXED_DDCONFIG})")
        fields = [f for f in cls.__dataclass_fields__ if f not in ("n_embed", "embed_dim", "kl_weight")]
        kwargs = _TAMING_DEFAULTS | {k: ddconfig[k] for k in fields if k in ddconfig}
        kwargs.update({k: params[k] for k in ("n_embed", "embed_dim", "kl_weight") if k in params})
        return cls(**kwargs)


class GumbelQuantize(nn.Module):
    """The parameters of taming's ``GumbelQuantize``: ``proj`` (1x1 conv to code logits) and ``embed`` (codebook)."""

    def __init__(self, in_channels: int, embed_dim: int, n_embed: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, n_embed, kernel_size=1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    def forward(self, h: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """(B, C, h, w) features -> (B, h, w) code indices."""
        logits = self.proj(h)  # (B, n_embed, h, w)
        return gumbel_argmax(logits, generator) if sample else logits.argmax(dim=1)

    def lookup(self, codes: Tensor) -> Tensor:
        """(B, h, w) indices -> (B, embed_dim, h, w) codebook vectors."""
        return self.embed(codes).permute(0, 3, 1, 2)  # (B, h, w, D) -> (B, D, h, w)


class VQGAN(nn.Module):
    """taming's ``GumbelVQ`` for inference: ``encode`` images to codes, ``decode`` codes to images."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        shared = dict(ch=cfg.ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks, dropout=cfg.dropout)
        shared.update(attn_resolutions=cfg.attn_resolutions, resolution=cfg.resolution, z_channels=cfg.z_channels)
        # registration order = taming's state-dict order (its loss module sat between decoder and quantize)
        self.encoder = Encoder(in_channels=cfg.in_channels, double_z=cfg.double_z, **shared)
        self.decoder = Decoder(out_ch=cfg.out_ch, **shared)
        self.quantize = GumbelQuantize(cfg.z_channels, cfg.embed_dim, cfg.n_embed)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, kernel_size=1)

    @torch.no_grad()
    def encode(self, images: Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> LongTensor codes (B, H/8, W/8).

        ``sample=True`` draws the codes as the original does (Gumbel noise on the logits, ``generator`` seeds
        it); the default takes the most likely code at every position.
        """
        if images.dim() != 4:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        h = self.quant_conv(self.encoder(images.to(self.quant_conv.weight.dtype)))
        return self.quantize(h, sample=sample, generator=generator)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """LongTensor codes (B, h, w) -> images (B, 3, 8h, 8w) clamped to [-1, 1]."""
        if codes.dim() != 3:
            raise ValueError(f"expected codes of shape (B, h, w), got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cfg.n_embed):
            raise ValueError(f"codes must lie in [0, {self.cfg.n_embed}), got [{int(codes.min())}, {int(codes.max())}]")
        quant = self.quantize.lookup(codes.long())
        return self.decoder(self.post_quant_conv(quant)).clamp(-1.0, 1.0)

    @staticmethod
    def to_pil(images: Tensor) -> list[Image.Image]:
        """Images (B, 3, H, W) in [-1, 1] -> RGB PIL images; ``(x + 1) / 2 * 255`` truncated to uint8."""
        pixels = (images.detach().float().clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0
        pixels = pixels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
        return [Image.fromarray(array) for array in pixels]  # (H, W, 3) uint8 is RGB


class _LightningStub:
    """Stand-in for a pickled Lightning class (e.g. a callback type used as a dict key); keeps data only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``, with Lightning's own classes (only) read as inert stand-ins."""
    if not path.is_file():
        raise FileNotFoundError(f"no VQGAN checkpoint file at {path}")
    advice = "re-save only its weights: torch.save({'state_dict': ckpt['state_dict']}, 'vqgan_weights.ckpt')"
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, OSError):
        unsafe = []  # not a zip checkpoint: torch.load below decides
    refused = sorted(name for name in unsafe if not name.startswith(_LIGHTNING_MODULES))
    if refused:
        raise UnsafeCheckpointError(f"{path}: refused to unpickle {', '.join(refused)}; {advice}")
    with torch.serialization.safe_globals([(_LightningStub, name) for name in unsafe]):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types; one line is enough
            reason = " ".join(str(err).split())[:200]
            raise CorruptCheckpointError(
                f"{path}: cannot be read with weights_only=True ({reason}); {advice}"
            ) from None
    if not isinstance(ckpt, dict):
        raise CorruptCheckpointError(f"{path} holds {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def vqgan_state_dict(ckpt: dict[str, Any], path: Path) -> dict[str, Tensor]:
    """The model weights of a Lightning checkpoint (``ckpt["state_dict"]``) or a bare state dict, minus ``loss.*``."""
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CorruptCheckpointError(f"{path}: no state_dict of tensors (keys: {', '.join(map(str, ckpt))[:200]})")
    dropped = [key for key in state if key.startswith("loss.")]
    if dropped:
        logger.info("%s: dropped %d loss.* entries (discriminator/LPIPS, only used in training)", path, len(dropped))
    return {key: value for key, value in state.items() if not key.startswith("loss.")}


def load_vqgan(
    ckpt_path: str | os.PathLike, config_path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> VQGAN:
    """Build the VQGAN of taming's ``model.yaml`` and load ``last.ckpt``'s weights strictly; eval mode, no grads."""
    ckpt_path = Path(ckpt_path)
    cfg = VQGANConfig.from_yaml(config_path)
    state = vqgan_state_dict(_read_checkpoint(ckpt_path), ckpt_path)
    with torch.device("meta"):
        model = VQGAN(cfg)  # no random init: every tensor comes from the checkpoint (assign=True)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        summary = " ".join(str(err).split())[:400]
        raise ValueError(f"{ckpt_path} does not match {config_path}: {summary}") from None
    logger.info("loaded VQGAN %s: %s", ckpt_path, cfg)
    return model.to(map_location).eval().requires_grad_(False)
