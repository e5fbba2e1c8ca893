"""OFA's multimodal encoder (spec §1.3 and Appendix A): ResNet patches followed by text tokens.

Sequence order is ``[image patches, text]``. Image patches get ``image_proj``, type embedding 1 and
``patch_layernorm_embedding``; text gets type embedding 0 and ``layernorm_embedding``; padded positions
are zeroed. Positions never enter the residual stream: they form the absolute attention bias, computed
once, to which each layer adds its text (text-text block) and image (patch-patch block) relative bias.

Unlike the original, position terms are computed once for the whole batch (shape (1, ...)) whenever
every sample shares the same positions, which is always the case except with ``sample_patch_num``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.config import OFAConfig
from models.embeddings import (
    image_position_ids,
    new_embedding,
    position_scores,
    register_bucket_buffers,
    relative_bias,
    relative_tables,
)
from models.layers import EncoderLayer, layer_drop_rates
from models.resnet import ResNet, norm_layer_for


@dataclass
class EncoderOut:
    """Batch-first encoder output; ``index_select`` reorders it for beam search."""

    hidden: Tensor  # (B, S, D), after the final LayerNorm
    padding_mask: Tensor  # (B, S) bool, True at padding (masked image patches included)
    position_embeddings: Tensor  # (B, S, D) LayerNorm-ed positions, keys of the decoder's cross bias
    states: list[Tensor] = field(default_factory=list)  # per-layer outputs when asked for

    def index_select(self, order: Tensor) -> EncoderOut:
        return EncoderOut(
            self.hidden.index_select(0, order),
            self.padding_mask.index_select(0, order),
            self.position_embeddings.index_select(0, order),
            [s.index_select(0, order) for s in self.states],
        )


def key_padding_bias(padding_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, S) bool -> (B, 1, 1, S) additive mask: -inf at padded keys, 0 elsewhere."""
    bias = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
    return bias.masked_fill(padding_mask, float("-inf"))[:, None, None, :]


class Encoder(nn.Module):
    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.cfg = cfg
        dim, heads, layers = cfg.encoder_embed_dim, cfg.encoder_attention_heads, cfg.encoder_layers
        self.num_heads, self.padding_idx = heads, embed_tokens.padding_idx
        self.embed_scale = 1.0 if cfg.no_scale_embedding else dim**0.5
        # buffers first, in the original's state-dict order
        register_bucket_buffers(self, cfg.token_bucket_size, cfg.image_bucket_size)
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(dim) if cfg.layernorm_embedding else None
        self.type_embedding = new_embedding(2, dim) if cfg.add_type_embedding else None
        norm = norm_layer_for(cfg.freeze_resnet, cfg.sync_bn)
        self.embed_images = ResNet(cfg.resnet_layers, norm=norm, drop_path_rate=cfg.resnet_drop_path_rate)
        self.image_proj = nn.Linear(1024, dim)
        self.patch_layernorm_embedding = nn.LayerNorm(dim) if cfg.patch_layernorm_embedding else None
        self.embed_positions = new_embedding(cfg.max_source_positions + 2, dim)
        self.embed_image_positions = new_embedding(cfg.image_bucket_size**2 + 1, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.pos_scaling = (dim / heads * cfg.attn_scale_factor) ** -0.5
        self.pos_q_linear = nn.Linear(dim, dim)
        self.pos_k_linear = nn.Linear(dim, dim)
        rates = layer_drop_rates(cfg.encoder_drop_path_rate, layers)
        self.layers = nn.ModuleList(EncoderLayer(cfg, rates[i]) for i in range(layers))
        self.layer_norm = nn.LayerNorm(dim)
        self.token_rel_pos_table_list, self.image_rel_pos_table_list = relative_tables(
            cfg.token_bucket_size, cfg.image_bucket_size, heads, layers
        )

    # ------------------------------------------------------------------ embeddings
    def _embed_text(self, src_tokens: Tensor) -> Tensor:
        x = self.embed_scale * self.embed_tokens(src_tokens)
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[0]
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        return nn.functional.dropout(x, p=self.cfg.dropout, training=self.training)

    def _embed_image(self, features: Tensor) -> Tensor:
        x = self.embed_scale * self.image_proj(features)
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[1]
        if self.patch_layernorm_embedding is not None:
            x = self.patch_layernorm_embedding(x)
        return nn.functional.dropout(x, p=self.cfg.dropout, training=self.training)

    def _patches(self, patch_images: Tensor, sample_patch_num: int | None) -> tuple[Tensor, Tensor]:
        """ResNet features (B, P, 1024) and their position ids (1 or B, P)."""
        feats = self.embed_images(patch_images)  # B,1024,h,w
        h, w = feats.shape[-2:]
        ids = image_position_ids(h, w, self.cfg.image_bucket_size, device=feats.device)[None]  # 1,P
        feats = feats.flatten(2).transpose(1, 2)  # B,P,1024
        if sample_patch_num is not None:
            # pretraining samples a random subset of patches per image (Python's RNG, like the original)
            order = [random.sample(range(h * w), k=sample_patch_num) for _ in range(feats.size(0))]
            order = torch.tensor(order, dtype=torch.long, device=feats.device)  # B,k
            feats = feats.gather(1, order[:, :, None].expand(-1, -1, feats.size(2)))
            ids = ids.expand(feats.size(0), -1).gather(1, order)
        return feats, ids

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        src_tokens: Tensor,
        patch_images: Tensor | None = None,
        patch_masks: Tensor | None = None,
        sample_patch_num: int | None = None,
        return_all_hiddens: bool = False,
    ) -> EncoderOut:
        """src_tokens (B, L); patch_images (B, 3, H, W); patch_masks (B,) bool, False = no image."""
        bsz, text_len = src_tokens.shape
        x = self._embed_text(src_tokens)
        padding = src_tokens.eq(self.padding_idx)
        pos = self.pos_ln(self.embed_positions.weight[:text_len])[None]  # 1,L,D
        image_ids = None
        if patch_images is not None:
            feats, image_ids = self._patches(patch_images, sample_patch_num)
            image_pad = torch.zeros(feats.shape[:2], dtype=torch.bool, device=feats.device)
            if patch_masks is not None:
                image_pad = image_pad | ~patch_masks.bool()[:, None]
            image_pos = self.image_pos_ln(self.embed_image_positions(image_ids))  # 1|B,P,D
            pos = torch.cat([image_pos, pos.expand(image_pos.size(0), -1, -1)], dim=1)
            x = torch.cat([self._embed_image(feats), x], dim=1)
            padding = torch.cat([image_pad, padding], dim=1)
        has_pads = bool(padding.any())
        if has_pads:
            x = x * (1 - padding[..., None].type_as(x))
        abs_bias = position_scores(self.pos_q_linear(pos), self.pos_k_linear(pos), self.num_heads, self.pos_scaling)
        pad_bias = key_padding_bias(padding, abs_bias.dtype) if has_pads else None
        states = []
        for idx, layer in enumerate(self.layers):
            mask = self._layer_bias(abs_bias, idx, text_len, image_ids)
            x = layer(x, mask if pad_bias is None else mask + pad_bias)
            if return_all_hiddens:
                states.append(x)
        x = self.layer_norm(x)
        return EncoderOut(x, padding, pos.expand(bsz, -1, -1), states)

    def _layer_bias(self, abs_bias: Tensor, idx: int, text_len: int, image_ids: Tensor | None) -> Tensor:
        """Absolute bias + this layer's relative biases on the text-text and patch-patch blocks."""
        bias = abs_bias.clone()
        buckets = self.token_rp_bucket[:text_len, :text_len]
        bias[:, :, -text_len:, -text_len:] += relative_bias(self.token_rel_pos_table_list[idx], buckets)
        if image_ids is not None:
            n = image_ids.size(1)
            image_buckets = self.image_rp_bucket[image_ids[:, :, None], image_ids[:, None, :]]  # 1|B,P,P
            bias[:, :, :n, :n] += relative_bias(self.image_rel_pos_table_list[idx], image_buckets)
        return bias
