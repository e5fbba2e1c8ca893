"""Padding variable-length samples into batches, with the semantics of OFA's fork of fairseq.

``collate_tokens`` behaves like ``fairseq.data.data_utils.collate_tokens`` in the fairseq copy that OFA
vendors, which every OFA collater calls (spec section 3.2):

* 1-D token tensors (L,) -> (B, L_max), right-padded with ``pad_idx`` unless ``left_pad``;
* 2-D tensors (L, V), such as the per-position vocabulary masks of constrained training, -> (B, L_max, V),
  padded along L with ``pad_idx`` cast to the tensor's dtype. OFA pads boolean masks with pad_idx=1, so
  padded rows are all True; that is harmless because those target positions are pad;
* ``move_eos_to_beginning`` shifts each sample right by one: position 0 gets ``eos_idx`` if given, else the
  sample's own last token, and the last token is dropped (1-D only, as in OFA);
* the length is at least ``pad_to_length`` and is rounded up to a multiple of ``pad_to_multiple``.

fairseq's ``pad_to_bsz`` (padding the batch dimension) is not reproduced: OFA never passes it.
"""

from collections.abc import Sequence

from torch import Tensor


def _padded_length(values: Sequence[Tensor], pad_to_length: int | None, pad_to_multiple: int) -> int:
    size = max(v.size(0) for v in values)
    if pad_to_length is not None:
        size = max(size, pad_to_length)
    if pad_to_multiple < 1:
        raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
    return -(-size // pad_to_multiple) * pad_to_multiple


def collate_tokens(
    values: Sequence[Tensor],
    pad_idx: int,
    *,
    left_pad: bool = False,
    move_eos_to_beginning: bool = False,
    eos_idx: int | None = None,
    pad_to_length: int | None = None,
    pad_to_multiple: int = 1,
) -> Tensor:
    """Stack 1-D (L,) or 2-D (L, V) tensors into (B, L_max) or (B, L_max, V), padding with ``pad_idx``."""
    if len(values) == 0:
        raise ValueError("collate_tokens needs at least one tensor")
    dim = values[0].dim()
    if dim not in (1, 2) or any(v.dim() != dim for v in values):
        raise ValueError(
            f"collate_tokens takes all-1-D or all-2-D tensors, got shapes {[tuple(v.shape) for v in values]}"
        )
    if dim == 2 and len({v.size(1) for v in values}) > 1:
        raise ValueError(f"2-D values must share their second dimension, got {[tuple(v.shape) for v in values]}")
    if dim == 2 and move_eos_to_beginning:
        raise ValueError("move_eos_to_beginning is only defined for 1-D token tensors")
    size = _padded_length(values, pad_to_length, pad_to_multiple)
    trailing = tuple(values[0].shape[1:])
    # new_full casts pad_idx to the dtype: 1 becomes True for boolean masks, as fairseq's fill_ does
    out = values[0].new_full((len(values), size, *trailing), pad_idx)
    for i, v in enumerate(values):
        n = v.size(0)
        dst = out[i, size - n :] if left_pad else out[i, :n]
        if not move_eos_to_beginning:
            dst.copy_(v)
        elif n > 0:
            # decoder input: eos (or the sample's own last token) first, then the sample minus its last token
            dst[0] = v[-1] if eos_idx is None else eos_idx
            dst[1:] = v[:-1]
    return out
