"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the large models, and full (unsharded) state dicts so
checkpoints keep the single-file fairseq layout whatever the parallelism.

Each transformer layer and the ResNet is its own shard group; the shared embedding and the remaining
parameters belong to the root group.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        fully_shard(layer, mesh=mesh)
    fully_shard(model.encoder.embed_images, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_model_state(model: torch.nn.Module) -> dict:
    """The complete state dict in the model's own key order (collective: every rank must call it)."""
    gathered = get_model_state_dict(model, options=_FULL)
    order = list(model.state_dict().keys())
    shared = gathered.get("encoder.embed_tokens.weight")
    out = {}
    for key in order:
        value = gathered.get(key)
        if value is None and key.endswith(("embed_tokens.weight", "output_projection.weight")):
            value = shared  # tied copies may be reported once
        out[key] = value
    return out


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    # parameters that never received a gradient (e.g. the image-code path in captioning) have no state
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True, strict=False))
