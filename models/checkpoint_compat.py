"""Make an original OFA state dict fit the model built here: fairseq's load-time upgrades (spec §1.11).

What fairseq does on load, and therefore what released checkpoints rely on:
- legacy names: ``layer_norms.{0,1,2}`` -> named layer norms, ``in_proj_weight`` -> q/k/v projections,
  ``embed_tokens``/``embed_out`` -> ``decoder.output_projection.weight``;
- derived buffers are regenerated, never trusted: the bucket tables and ``decoder.image_position_idx``
  (whose length depends on ``code_image_size``);
- missing keys are filled from the freshly built model (logged here, silent in fairseq);
- ``embed_image_positions`` tables shorter than the model's are extended with N(0, D^-0.5) rows;
- a vocabulary one row longer without ``<mask>`` is truncated; a shorter one gets N(0, D^-0.5) rows appended
  to the shared embedding (all three tied keys);
- ``classification_heads.*`` the model does not have are dropped.
Anything else unexpected is an error naming the keys: no silent data loss.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

TIED_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight")
DERIVED_BUFFERS = (
    "encoder.token_rp_bucket",
    "encoder.image_rp_bucket",
    "decoder.token_rp_bucket",
    "decoder.image_rp_bucket",
    "decoder.image_position_idx",
)
_LEGACY_LN = {
    "encoder": {"0": "self_attn_layer_norm", "1": "final_layer_norm"},
    "decoder": {"0": "self_attn_layer_norm", "1": "encoder_attn_layer_norm", "2": "final_layer_norm"},
}


def _rename_legacy(state: dict[str, Tensor]) -> None:
    for key in list(state):
        m = re.match(r"(encoder|decoder)(\.layers\.\d+\.)layer_norms\.(\d)\.(weight|bias)$", key)
        if m:
            side, mid, idx, kind = m.groups()
            state[f"{side}{mid}{_LEGACY_LN[side][idx]}.{kind}"] = state.pop(key)
            continue
        m = re.match(r"(.*\.)in_proj_(weight|bias)$", key)
        if m:
            prefix, kind = m.groups()
            q, k, v = state.pop(key).chunk(3, dim=0)
            state.update({f"{prefix}q_proj.{kind}": q, f"{prefix}k_proj.{kind}": k, f"{prefix}v_proj.{kind}": v})
    if "decoder.output_projection.weight" not in state:
        for old in ("decoder.embed_tokens.weight", "decoder.embed_out"):
            if old in state:
                state["decoder.output_projection.weight"] = state[old]
                break


def _fit_rows(state: dict[str, Tensor], key: str, rows: int, what: str) -> None:
    """Append N(0, D^-0.5) rows to ``state[key]`` so it has ``rows`` rows."""
    old = state[key]
    missing = rows - old.size(0)
    if missing <= 0:
        return
    extra = torch.empty(missing, old.size(1)).normal_(mean=0.0, std=old.size(1) ** -0.5)
    state[key] = torch.cat([old, extra.to(old.dtype)])
    logger.warning("%s: checkpoint has %d rows, model %d; appended %d random rows", what, old.size(0), rows, missing)


def _fit_vocab(state: dict[str, Tensor], vocab_size: int, has_mask: bool) -> None:
    present = [k for k in TIED_KEYS if k in state]
    if not present:
        return
    rows = state[present[0]].size(0)
    if rows == vocab_size + 1 and not has_mask:
        for k in present:
            state[k] = state[k][:vocab_size]
    elif rows < vocab_size:
        _fit_rows(state, present[0], vocab_size, "token embedding")
        for k in present[1:]:
            state[k] = state[present[0]]
    elif rows != vocab_size:
        raise ValueError(
            f"checkpoint vocabulary has {rows} rows but the model's dictionary has {vocab_size}: "
            "was it trained with another dictionary (--bpe-dir) or other --code-dict-size/--num-bins?"
        )


def _check_shapes(state: dict[str, Tensor], current: dict[str, Tensor]) -> None:
    """Name the first entries (in checkpoint order) whose shapes differ from the model's."""
    wrong = [k for k, v in state.items() if k in current and isinstance(v, Tensor) and v.shape != current[k].shape]
    if wrong:
        shown = "; ".join(f"{k} {tuple(state[k].shape)} vs {tuple(current[k].shape)}" for k in wrong[:3])
        raise ValueError(
            f"{len(wrong)} checkpoint entries do not fit this model's shapes (checkpoint vs model), first: {shown}"
            f"{' ...' if len(wrong) > 3 else ''} (trained with another --arch or model settings?)"
        )


def upgrade_state_dict(model: nn.Module, state: dict[str, Tensor], has_mask: bool = True) -> dict[str, Tensor]:
    """Return a copy of ``state`` that ``model.load_state_dict(..., strict=True)`` accepts."""
    state = dict(state)
    _rename_legacy(state)
    current = model.state_dict()
    for key in DERIVED_BUFFERS:
        state[key] = current[key]
    for side in ("encoder", "decoder"):
        key = f"{side}.embed_image_positions.weight"
        if key in state:
            _fit_rows(state, key, current[key].size(0), key)
    _fit_vocab(state, current[TIED_KEYS[0]].size(0), has_mask)
    heads = [k for k in state if k.startswith("classification_heads.") and k not in current]
    for k in heads:
        del state[k]
    if heads:
        logger.warning("dropped %d classification-head entries the model does not have", len(heads))
    unexpected = sorted(set(state) - set(current))
    if unexpected:
        raise ValueError(
            f"checkpoint has {len(unexpected)} entries this model does not have: {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''} (does its stored configuration match the weights?)"
        )
    _check_shapes(state, current)
    missing = sorted(set(current) - set(state))
    for k in missing:
        state[k] = current[k]
    if missing:
        logger.warning("checkpoint lacks %d entries, kept freshly initialised: %s", len(missing), missing[:10])
    return state
