"""Transformer blocks of OFA (spec §1.6): pre-LayerNorm layers with NormFormer extras and drop-path.

NormFormer adds ``attn_ln`` (encoder) / ``self_attn_ln`` + ``cross_attn_ln`` (decoder) after each
attention, ``ffn_layernorm`` between the activation and ``fc2``, and per-head ``c_attn`` scales inside
the attention. Attribute names equal the original's so state-dict keys match released checkpoints.
Tensors are batch-first (B, T, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.attention import MultiheadAttention
from models.config import OFAConfig


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescaling the survivors."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = torch.rand(shape, dtype=x.dtype, device=x.device).add_(keep).floor_()
    return x.div(keep) * mask


class DropPath(nn.Module):
    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def activation(name: str, x: Tensor) -> Tensor:
    if name == "gelu":
        # exact erf GELU; like fairseq's float32 upcast, half/bf16 kernels compute it in float32 internally
        return F.gelu(x)
    return F.relu(x)


def layer_drop_rates(rate: float, layers: int) -> list[float]:
    """Linearly increasing drop-path rates, 0 for the first layer and ``rate`` for the last."""
    return torch.linspace(0, rate, layers, device="cpu").tolist()


class _FeedForward(nn.Module):
    """Mixin holding the shared FFN half of both layer types (fc1 -> act -> [ffn LN] -> fc2)."""

    def _ffn(self, x: Tensor) -> Tensor:
        residual = x
        x = self.final_layer_norm(x)
        x = activation(self.activation_fn, self.fc1(x))
        x = F.dropout(x, p=self.activation_dropout, training=self.training)
        if self.ffn_layernorm is not None:
            x = self.ffn_layernorm(x)
        x = F.dropout(self.fc2(x), p=self.dropout, training=self.training)
        if self.w_resid is not None:
            residual = self.w_resid * residual
        return residual + self.drop_path(x)

    def _block(self, attn_out: Tensor, residual: Tensor, post_ln: nn.Module | None) -> Tensor:
        if post_ln is not None:
            attn_out = post_ln(attn_out)
        attn_out = F.dropout(attn_out, p=self.dropout, training=self.training)
        return residual + self.drop_path(attn_out)

    def _init_ffn(self, cfg: OFAConfig, drop_path_rate: float) -> None:
        self.activation_fn = cfg.activation_fn
        self.dropout = cfg.dropout
        self.activation_dropout = cfg.ffn_activation_dropout
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()


class EncoderLayer(_FeedForward):
    def __init__(self, cfg: OFAConfig, drop_path_rate: float = 0.0):
        super().__init__()
        dim, ffn_dim = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim
        self._init_ffn(cfg, drop_path_rate)
        self.self_attn = MultiheadAttention(
            dim, cfg.encoder_attention_heads, dropout=cfg.attention_dropout,
            scale_factor=cfg.attn_scale_factor, scale_heads=cfg.scale_heads,
        )  # fmt: skip
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.attn_ln = nn.LayerNorm(dim) if cfg.scale_attn else None
        self.ffn_layernorm = nn.LayerNorm(ffn_dim) if cfg.scale_fc else None
        self.w_resid = nn.Parameter(torch.ones(dim)) if cfg.scale_resids else None
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        """x (B, T, D); attn_mask: bias + padding, broadcastable to (B, H, T, T)."""
        h = self.self_attn(self.self_attn_layer_norm(x), attn_mask=attn_mask)
        x = self._block(h, x, self.attn_ln)
        return self._ffn(x)


class DecoderLayer(_FeedForward):
    def __init__(self, cfg: OFAConfig, drop_path_rate: float = 0.0):
        super().__init__()
        dim, ffn_dim, heads = cfg.decoder_embed_dim, cfg.decoder_ffn_embed_dim, cfg.decoder_attention_heads
        self._init_ffn(cfg, drop_path_rate)
        attn_args = dict(dropout=cfg.attention_dropout, scale_factor=cfg.attn_scale_factor, scale_heads=cfg.scale_heads)
        self.self_attn = MultiheadAttention(dim, heads, **attn_args)
        self.self_attn_ln = nn.LayerNorm(dim) if cfg.scale_attn else None
        self.cross_attn_ln = nn.LayerNorm(dim) if cfg.scale_attn else None
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.encoder_attn = MultiheadAttention(dim, heads, kdim=cfg.encoder_embed_dim, **attn_args)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.ffn_layernorm = nn.LayerNorm(ffn_dim) if cfg.scale_fc else None
        self.w_resid = nn.Parameter(torch.ones(dim)) if cfg.scale_resids else None
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: Tensor,
        encoder_out: Tensor,
        self_mask: Tensor | None,
        cross_mask: Tensor | None,
        cache: dict[str, dict[str, Tensor]] | None = None,
    ) -> Tensor:
        """x (B, Tq, D) (Tq = 1 when decoding incrementally); encoder_out (B, S, D).

        self_mask / cross_mask: bias + causal/padding masks, broadcastable to (B, H, Tq, T|S).
        cache: {"self": {...}, "cross": {...}} key/value caches of this layer, or None.
        """
        self_cache = cross_cache = None
        if cache is not None:
            self_cache, cross_cache = cache.setdefault("self", {}), cache.setdefault("cross", {})
        h = self.self_attn(self.self_attn_layer_norm(x), attn_mask=self_mask, cache=self_cache)
        x = self._block(h, x, self.self_attn_ln)
        h = self.encoder_attn(
            self.encoder_attn_layer_norm(x),
            encoder_out,
            attn_mask=cross_mask,
            cache=cross_cache,
            static_kv=True,
        )
        x = self._block(h, x, self.cross_attn_ln)
        return self._ffn(x)
