"""OFA multi-head attention (spec §1.5): separate q/k/v/out projections, (2*head_dim)^-0.5 scaling,
an additive bias (position terms, causal and padding masks folded in by the caller) and NormFormer's
per-head output scales ``c_attn``.

The scores go through ``torch.nn.functional.scaled_dot_product_attention``; the explicit
softmax path (``impl="explicit"``, float32 softmax like fairseq) is kept as the reference it is tested
against. Tensors are batch-first: (B, T, D) outside, (B, H, T, head_dim) inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_IMPLS = ("sdpa", "explicit")


class MultiheadAttention(nn.Module):
    """Self- or cross-attention. State-dict names follow the original (``q_proj``, ``c_attn``, ...)."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        kdim: int | None = None,
        dropout: float = 0.0,
        scale_factor: float = 2.0,
        scale_heads: bool = True,
    ):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        # The released models were trained with attn_scale_factor=2: q is scaled by (2*dh)^-0.5.
        self.scaling = (self.head_dim * scale_factor) ** -0.5
        self.dropout = dropout
        self.c_attn = nn.Parameter(torch.ones(num_heads)) if scale_heads else None
        kdim = kdim or embed_dim
        # registration order = the original's state-dict order
        self.k_proj = nn.Linear(kdim, embed_dim)
        self.v_proj = nn.Linear(kdim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.impl = "sdpa"

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # B,H,T,dh

    def _key_value(self, source: Tensor, cache: dict[str, Tensor] | None, static_kv: bool) -> tuple[Tensor, Tensor]:
        if cache is not None and static_kv and "k" in cache:
            return cache["k"], cache["v"]  # cross-attention: encoder keys/values projected once
        k, v = self._heads(self.k_proj(source)), self._heads(self.v_proj(source))
        if cache is not None:
            if not static_kv and "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        return k, v

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        attn_mask: Tensor | None = None,
        cache: dict[str, Tensor] | None = None,
        static_kv: bool = False,
    ) -> Tensor:
        """query (B, Tq, D); key (B, S, kdim) for cross-attention, None for self-attention.

        attn_mask: float, broadcastable to (B, H, Tq, S): position bias plus -inf at masked keys.
        cache: per-module dict holding projected keys/values for incremental decoding.
        """
        b, tq, _ = query.shape
        q = self._heads(self.q_proj(query) * self.scaling)
        k, v = self._key_value(query if key is None else key, cache, static_kv)
        if k.size(0) != b:
            out = self._attend_grouped(q, k, v, attn_mask)
        else:
            out = self._attend(q, k, v, attn_mask)  # B,H,Tq,dh
        out = out.transpose(1, 2)  # B,Tq,H,dh
        if self.c_attn is not None:
            out = out * self.c_attn[:, None]
        return self.out_proj(out.reshape(b, tq, self.embed_dim))

    def _attend_grouped(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Keys/values with batch Bk shared by groups of r = Bq / Bk consecutive query rows.

        Beams of one sentence (and answer candidates of one sample) attend to the same encoder output:
        folding each group's queries into one sequence avoids r copies of its keys and values.
        """
        bq, heads, tq, dh = q.shape
        bk = k.size(0)
        if bq % bk:
            raise ValueError(f"query batch {bq} is not a multiple of the key/value batch {bk}")
        r = bq // bk
        q = q.view(bk, r, heads, tq, dh).transpose(1, 2).reshape(bk, heads, r * tq, dh)
        if mask is not None:
            if mask.size(0) == bq:  # one mask per query row
                mask = mask.view(bk, r, *mask.shape[1:]).transpose(1, 2).flatten(2, 3)
            elif tq > 1:  # shared by the group: repeat it for every row of the group
                mask = mask.unsqueeze(2).expand(-1, -1, r, -1, -1).flatten(2, 3)
            # else (one query step, shared mask): (1|Bk, H, 1, S) already broadcasts over the r rows
        out = self._attend(q, k, v, mask)  # Bk,H,r*Tq,dh
        return out.view(bk, heads, r, tq, dh).transpose(1, 2).reshape(bq, heads, tq, dh)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        dropout = self.dropout if self.training else 0.0
        if mask is not None:
            mask = mask.to(q.dtype)
        if self.impl == "sdpa":
            # q is already scaled, as in the original, so the kernel's own scale is 1
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=1.0)
        scores = torch.matmul(q, k.transpose(-1, -2))
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores.float(), dim=-1).type_as(scores)
        probs = F.dropout(probs, p=dropout, training=self.training)
        return torch.matmul(probs, v)


def set_attention_impl(model: nn.Module, impl: str) -> None:
    """Switch every attention module of ``model`` to ``impl`` ("sdpa" or "explicit")."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {impl!r}; known: {list(ATTENTION_IMPLS)}")
    for module in model.modules():
        if isinstance(module, MultiheadAttention):
            module.impl = impl
