"""Position machinery shared by the encoder and decoder (spec §1.3, §1.4, §1.7).

OFA does not add positions to token embeddings. Instead every attention gets an additive bias made of
(a) an *absolute* term ``(W_q LN(p_i)) (W_k LN(p_j))^T * s`` from learned position tables, computed once
per forward and shared by all layers, and (b) a *per-layer* relative term looked up from bucket tables:
1-D log buckets for text, 2-D offsets on a 42x42 grid for image patches / image codes.

The bucket tables are reproduced exactly (they are also stored in checkpoints as buffers); the
image-position ids are ``row * image_bucket_size + col + 1`` with index 0 reserved.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def make_token_bucket_position(bucket_size: int, max_position: int = 1024) -> Tensor:
    """(max_position, max_position) int64 table of 1-D relative-position buckets in [0, 2*bucket_size-2].

    Offsets inside +-bucket_size//2 map to themselves; larger ones are log-spaced. The arithmetic
    (float32 log of an int64 ratio, ceil, int cast) follows the original so the table is bit-identical.
    """
    pos = torch.arange(max_position, dtype=torch.long)
    relative = pos[:, None] - pos[None, :]
    sign = torch.sign(relative)
    mid = bucket_size // 2
    near = (relative < mid) & (relative > -mid)
    abs_pos = torch.where(near, mid - 1, relative.abs())
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    bucket = torch.where(abs_pos.le(mid), relative, log_pos.int() * sign).long()
    return bucket + bucket_size - 1


def make_image_bucket_position(bucket_size: int, num_relative_distance: int) -> Tensor:
    """(bucket_size**2 + 1)^2 int64 table of 2-D relative offsets between grid cells.

    Row/column 0 belong to the reserved position id 0 and hold the three extra bucket ids at the end of
    the table (``num_relative_distance - 3/-2/-1``).
    """
    coords = torch.stack(torch.meshgrid(torch.arange(bucket_size), torch.arange(bucket_size), indexing="ij"))
    coords = coords.flatten(1)  # (2, G*G), row-major cells
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (G*G, G*G, 2)
    rows = (relative[..., 0] + bucket_size - 1) * (2 * bucket_size - 1)
    cols = relative[..., 1] + bucket_size - 1
    size = bucket_size * bucket_size + 1
    table = torch.zeros(size, size, dtype=torch.long)
    table[1:, 1:] = rows + cols
    table[0, :] = num_relative_distance - 3
    table[:, 0] = num_relative_distance - 2
    table[0, 0] = num_relative_distance - 1
    return table


def image_num_rel_distance(bucket_size: int) -> int:
    return (2 * bucket_size - 1) ** 2 + 3


def image_position_ids(h: int, w: int, bucket_size: int, device: torch.device | None = None) -> Tensor:
    """Row-major position ids ``r * bucket_size + c + 1`` of an h x w patch grid, shape (h*w,)."""
    rows = torch.arange(h, device=device)[:, None] * bucket_size
    cols = torch.arange(w, device=device)[None, :]
    return (rows + cols + 1).flatten()


def code_position_ids(code_image_size: int, bucket_size: int) -> Tensor:
    """The decoder's image-code position ids: [0] (bos) + the window grid + 769 fillers of 1024 (spec §1.7).

    Length 1026 for code_image_size 128; the buffer is regenerated on load since it depends on this size.
    """
    window = code_image_size // 8
    grid = image_position_ids(window, window, bucket_size)
    filler = torch.full((769,), 1024, dtype=torch.long)
    return torch.cat([torch.zeros(1, dtype=torch.long), grid, filler])


def register_bucket_buffers(module: nn.Module, token_bucket_size: int, image_bucket_size: int) -> None:
    """The buffers both encoder and decoder start with: ``version`` and the two bucket tables."""
    module.register_buffer("version", torch.tensor([3.0]))
    module.register_buffer("token_rp_bucket", make_token_bucket_position(token_bucket_size))
    num_image_rel = image_num_rel_distance(image_bucket_size)
    module.register_buffer("image_rp_bucket", make_image_bucket_position(image_bucket_size, num_image_rel))


def relative_tables(
    token_bucket_size: int, image_bucket_size: int, heads: int, layers: int
) -> tuple[nn.ModuleList, nn.ModuleList]:
    """Per-layer relative-position tables: text (2*bucket-1 rows) and image ((2*G-1)^2 + 3 rows), H columns."""
    token = nn.ModuleList(nn.Embedding(2 * token_bucket_size - 1, heads) for _ in range(layers))
    image = nn.ModuleList(nn.Embedding(image_num_rel_distance(image_bucket_size), heads) for _ in range(layers))
    return token, image


def new_embedding(num: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """fairseq's ``Embedding``: N(0, dim^-0.5), padding row zeroed (later overridden by BERT init)."""
    emb = nn.Embedding(num, dim, padding_idx=padding_idx)
    nn.init.normal_(emb.weight, mean=0.0, std=dim**-0.5)
    if padding_idx is not None:
        nn.init.zeros_(emb.weight[padding_idx])
    return emb


def position_scores(q: Tensor, k: Tensor, num_heads: int, scaling: float) -> Tensor:
    """The absolute part of the attention bias: per-head ``(q * s) @ k^T`` of projected position embeddings.

    q (B', Tq, D) and k (B', Tk, D) are the q/k position linears applied to LayerNorm-ed positions;
    returns (B', H, Tq, Tk). B' is 1 when positions are the same for the whole batch (the usual case).
    """
    bq, tq, _ = q.shape
    bk, tk, _ = k.shape
    q = q.view(bq, tq, num_heads, -1).transpose(1, 2) * scaling  # B',H,Tq,dh
    k = k.view(bk, tk, num_heads, -1).transpose(1, 2)  # B',H,Tk,dh
    return torch.matmul(q, k.transpose(2, 3))


def relative_bias(table: nn.Embedding, buckets: Tensor) -> Tensor:
    """Look up a per-head relative bias: buckets (..., Tq, Tk) -> (..., H, Tq, Tk)."""
    return table(buckets).movedim(-1, -3)
