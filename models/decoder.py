"""OFA's decoder (spec §1.7): text tokens or VQGAN image codes, with an incremental key/value cache.

Rows flagged by ``code_masks`` are image-code sequences (image generation): they use image position
embeddings (``image_position_idx``), ``image_pos_ln``, ``code_layernorm_embedding`` and the 2-D relative
bias instead of the text ones. Decoding starts from bos. Positions are not added to the token
embeddings of released models (``--disable-entangle``); they only enter through the self- and
cross-attention biases, whose cross keys are the encoder's LayerNorm-ed position embeddings.

``DecoderState`` is the incremental cache: per-layer keys/values, the projected cross-position keys and
the padding flags of fed tokens; ``reorder`` follows beam search.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from models.config import OFAConfig
from models.embeddings import (
    code_position_ids,
    new_embedding,
    position_scores,
    register_bucket_buffers,
    relative_bias,
    relative_tables,
)
from models.encoder import EncoderOut, key_padding_bias
from models.layers import DecoderLayer, layer_drop_rates


@dataclass
class DecoderState:
    """Incremental decoding cache.

    Self-attention caches and ``padding`` have one row per decoded sequence (dim 0). Cross-attention
    caches and ``cross_pos_k`` have one row per *encoder* sample: the rows decoded for a sample (its beams,
    its answer candidates) are consecutive and share them.
    """

    layers: list[dict[str, dict[str, Tensor]]] = field(default_factory=list)
    cross_pos_k: Tensor | None = None  # (B_enc, S, D) cross_pos_k_linear(encoder positions)
    padding: Tensor | None = None  # (B, T) bool, pad flags of the tokens fed so far

    @property
    def past_length(self) -> int:
        """Number of decoder steps already in the cache."""
        return 0 if self.padding is None else self.padding.size(1)

    def reorder(self, order: Tensor, sample_order: Tensor | None = None) -> None:
        """Follow beam search: rows are picked by ``order``; encoder samples by ``sample_order`` if given."""
        for layer in self.layers:
            layer["self"] = {k: v.index_select(0, order) for k, v in layer.get("self", {}).items()}
            if sample_order is not None:
                layer["cross"] = {k: v.index_select(0, sample_order) for k, v in layer.get("cross", {}).items()}
        if self.padding is not None:
            self.padding = self.padding.index_select(0, order)
        if sample_order is not None and self.cross_pos_k is not None:
            self.cross_pos_k = self.cross_pos_k.index_select(0, sample_order)


class Decoder(nn.Module):
    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.cfg = cfg
        dim, heads, layers = cfg.decoder_embed_dim, cfg.decoder_attention_heads, cfg.decoder_layers
        self.num_heads, self.padding_idx = heads, embed_tokens.padding_idx
        self.embed_scale = 1.0 if cfg.no_scale_embedding else dim**0.5
        register_bucket_buffers(self, cfg.token_bucket_size, cfg.image_bucket_size)
        self.register_buffer("image_position_idx", code_position_ids(cfg.code_image_size, cfg.image_bucket_size))
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(dim) if cfg.layernorm_embedding else None
        self.embed_positions = new_embedding(cfg.max_target_positions + 2, dim)
        self.embed_image_positions = new_embedding(cfg.image_bucket_size**2 + 1, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.pos_scaling = (dim / heads * cfg.attn_scale_factor) ** -0.5
        self.self_pos_q_linear = nn.Linear(dim, dim)
        self.self_pos_k_linear = nn.Linear(dim, dim)
        self.cross_pos_q_linear = nn.Linear(dim, dim)
        self.cross_pos_k_linear = nn.Linear(dim, dim)
        self.code_layernorm_embedding = nn.LayerNorm(dim) if cfg.code_layernorm_embedding else None
        rates = layer_drop_rates(cfg.decoder_drop_path_rate, layers)
        self.layers = nn.ModuleList(DecoderLayer(cfg, rates[i]) for i in range(layers))
        self.layer_norm = nn.LayerNorm(dim)
        self.output_projection = nn.Linear(dim, embed_tokens.num_embeddings, bias=False)
        self.output_projection.weight = embed_tokens.weight  # tied (share_decoder_input_output_embed)
        self.token_rel_pos_table_list, self.image_rel_pos_table_list = relative_tables(
            cfg.token_bucket_size, cfg.image_bucket_size, heads, layers
        )

    # ------------------------------------------------------------------ positions
    def _positions(self, length: int, code: bool) -> Tensor:
        """(length, D) raw position embeddings of decoder steps 0..length-1."""
        if code:
            return self.embed_image_positions(self.image_position_idx[:length])
        return self.embed_positions.weight[:length]

    def _position_bias(self, length: int, rows: slice, code: bool, cross_k: Tensor) -> tuple[Tensor, Tensor]:
        """Absolute self bias (1, H, Tq, T) and cross bias (B, H, Tq, S) for query steps ``rows``."""
        ln = self.image_pos_ln if code else self.pos_ln
        pos = ln(self._positions(length, code))[None]  # 1,T,D
        q_pos = pos[:, rows]
        self_bias = position_scores(
            self.self_pos_q_linear(q_pos), self.self_pos_k_linear(pos), self.num_heads, self.pos_scaling
        )
        cross_bias = position_scores(self.cross_pos_q_linear(q_pos), cross_k, self.num_heads, self.pos_scaling)
        return self_bias, cross_bias

    def _relative_buckets(self, length: int, rows: slice, code: bool) -> Tensor:
        if code:
            ids = self.image_position_idx[:length]
            return self.image_rp_bucket[ids[rows, None], ids[None, :]]
        return self.token_rp_bucket[:length, :length][rows]

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        prev_output_tokens: Tensor,
        encoder_out: EncoderOut,
        code_masks: Tensor | None = None,
        state: DecoderState | None = None,
        features_only: bool = False,
    ) -> tuple[Tensor, dict]:
        """prev_output_tokens (B, T), starting with bos. With ``state`` only the steps not yet in its cache
        are computed (usually the last one; several at once to prefill a prompt); the output covers them.
        ``encoder_out`` may hold fewer samples than B: each then serves B / B_enc consecutive rows.
        Returns (logits or features, {"inner_states": [embeddings, layer 1, ..., layer N] pre final LN}).
        """
        bsz, length = prev_output_tokens.shape
        past = state.past_length if state is not None else 0
        rows = slice(past, length)
        tokens = prev_output_tokens[:, rows]
        kinds = self._row_kinds(code_masks, bsz)
        if state is None:
            cross_k = self.cross_pos_k_linear(encoder_out.position_embeddings)
        else:
            if state.cross_pos_k is None:  # projected once per sample, reused at every step
                state.cross_pos_k = self.cross_pos_k_linear(encoder_out.position_embeddings)
            cross_k = state.cross_pos_k
        terms = {code: self._position_bias(length, rows, code, cross_k) for code in kinds}
        x = self._embed(tokens, length, rows, code_masks, kinds)
        self_pad = self._self_padding(tokens, state)
        enc_pad = key_padding_bias(encoder_out.padding_mask, x.dtype)
        causal = None
        if length - past > 1:  # query i (absolute step past + i) must not see later steps
            causal = torch.full((length - past, length), float("-inf"), device=x.device, dtype=x.dtype)
            causal = causal.triu(past + 1)
        if state is not None and not state.layers:
            state.layers = [{} for _ in self.layers]
        # the cross-attention mask is the same for every layer (absolute bias only)
        cross_mask = self._select(kinds, code_masks, {c: t[1] + enc_pad for c, t in terms.items()})
        inner_states = [x]
        for idx, layer in enumerate(self.layers):
            self_mask = self._select(
                kinds, code_masks, {c: t[0] + self._rel(idx, length, rows, c) for c, t in terms.items()}
            )
            if causal is not None:
                self_mask = self_mask + causal
            if self_pad is not None:
                self_mask = self_mask + self_pad
            cache = state.layers[idx] if state is not None else None
            x = layer(x, encoder_out.hidden, self_mask, cross_mask, cache)
            inner_states.append(x)
        x = self.layer_norm(x)
        if not features_only:
            x = self.output_projection(x)
        return x, {"inner_states": inner_states}

    def _rel(self, idx: int, length: int, rows: slice, code: bool) -> Tensor:
        table = self.image_rel_pos_table_list[idx] if code else self.token_rel_pos_table_list[idx]
        return relative_bias(table, self._relative_buckets(length, rows, code))[None]  # 1,H,Tq,T

    @staticmethod
    def _row_kinds(code_masks: Tensor | None, bsz: int) -> tuple[bool, ...]:
        """Which row types are present: (False,) text only, (True,) codes only, or both."""
        if code_masks is None or not bool(code_masks.any()):
            return (False,)
        return (True,) if bool(code_masks.all()) else (False, True)

    @staticmethod
    def _select(kinds: tuple[bool, ...], code_masks: Tensor | None, values: dict[bool, Tensor]) -> Tensor:
        """Per-row choice between the text and code variant of a (1|B, ...) tensor."""
        if len(kinds) == 1:
            return values[kinds[0]]
        pick = code_masks.view(-1, *([1] * (values[True].dim() - 1)))
        chosen = []
        for value in (values[True], values[False]):
            if value.size(0) not in (1, pick.size(0)):  # per-sample term, rows of one sample differ in kind
                value = value.repeat_interleave(pick.size(0) // value.size(0), dim=0)
            chosen.append(value)
        return torch.where(pick, *chosen)

    def _embed(self, tokens: Tensor, length: int, rows: slice, code_masks: Tensor | None, kinds) -> Tensor:
        x = self.embed_scale * self.embed_tokens(tokens)
        if not self.cfg.disable_entangle:
            # the original adds positions unless --disable-entangle (its `is not None` test is always true)
            x = x + self._select(kinds, code_masks, {c: self._positions(length, c)[rows][None] for c in kinds})
        if self.layernorm_embedding is not None:
            code_ln = self.code_layernorm_embedding
            if code_ln is None or kinds == (False,):
                x = self.layernorm_embedding(x)
            elif kinds == (True,):
                x = code_ln(x)
            else:
                x = self._select(kinds, code_masks, {False: self.layernorm_embedding(x), True: code_ln(x)})
        return nn.functional.dropout(x, p=self.cfg.dropout, training=self.training)

    def _self_padding(self, tokens: Tensor, state: DecoderState | None) -> Tensor | None:
        """-inf at padded decoder keys (fairseq masks pad keys in self-attention), or None."""
        pad = tokens.eq(self.padding_idx)
        if state is not None:
            state.padding = pad if state.padding is None else torch.cat([state.padding, pad], dim=1)
            pad = state.padding
        if not bool(pad.any()):
            return None
        return key_padding_bias(pad, self.embed_tokens.weight.dtype)
