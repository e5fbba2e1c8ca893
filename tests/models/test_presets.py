"""Each preset builds exactly the released architecture: state-dict keys, shapes, dtypes, parameter counts."""

from __future__ import annotations

import json

import pytest
import torch

from models import PRESETS, build_model, get_preset
from models.config import OFAConfig

RELEASED = ["ofa_tiny", "ofa_medium", "ofa_base", "ofa_large", "ofa_huge"]


@pytest.mark.parametrize("arch", RELEASED)
def test_golden_preset_state_dict_matches_original(arch, golden_dir):
    expected = json.loads((golden_dir / f"keys_{arch}.json").read_text())
    model = build_model(get_preset(arch), device="meta")  # shapes only: huge costs no memory
    state = model.state_dict(keep_vars=True)
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]
    want = [(e["key"], e["shape"], e["dtype"]) for e in expected["state_dict"]]
    assert got == want  # same keys, same order, same shapes and dtypes
    unique = {id(p): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == expected["num_parameters_unique"]
    buffers = sum(b.numel() for b in model.buffers())
    assert buffers == expected["num_buffer_elements"]


def test_golden_test_preset_is_the_small_fixture_model(golden_dir):
    expected = json.loads((golden_dir / "keys_small.json").read_text())
    state = build_model(get_preset("ofa_test"), device="meta").state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == [(e["key"], e["shape"]) for e in expected["state_dict"]]


def test_tied_embeddings_are_one_parameter():
    model = build_model(get_preset("ofa_test"))
    assert model.encoder.embed_tokens.weight is model.decoder.embed_tokens.weight
    assert model.decoder.output_projection.weight is model.encoder.embed_tokens.weight


def test_unknown_preset_lists_known_names():
    with pytest.raises(KeyError, match="ofa_base"):
        get_preset("ofa_gigantic")


def test_presets_are_independent_copies():
    cfg = get_preset("ofa_tiny")
    cfg.dropout = 0.5
    assert PRESETS["ofa_tiny"].dropout == 0.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"resnet_type": "resnet7"}, "--resnet-type"),
        ({"encoder_normalize_before": False}, "--encoder-normalize-before"),
        ({"encoder_attention_heads": 5}, "not divisible"),
        ({"activation_fn": "swish"}, "--activation-fn"),
    ],
)
def test_config_refuses_unsupported_settings(change, match):
    with pytest.raises(ValueError, match=match):
        OFAConfig(**change)


def test_config_from_ofa_args_ignores_unrelated_and_keeps_preset_defaults():
    args = {"_name": "ofa_tiny", "encoder_layers": 2, "lr": [1e-5], "attn_scale_factor": 2, "data": "x.tsv"}
    cfg = OFAConfig.from_ofa_args(args, get_preset("ofa_tiny"))
    assert cfg.encoder_layers == 2 and cfg.decoder_layers == 4 and cfg.arch == "ofa_tiny"
    assert isinstance(cfg.attn_scale_factor, float)
    assert OFAConfig.from_ofa_args(cfg.to_ofa_args()) == cfg


def test_freezing_the_embedding_freezes_the_output_projection():
    model = build_model(get_preset("ofa_test").replace(freeze_encoder_embedding=True))
    assert not model.decoder.output_projection.weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if "embed_tokens" not in n)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = build_model(get_preset("ofa_test")).train()
    src = torch.tensor([[0, 10, 11, 2], [0, 12, 2, 1]])
    prev = torch.tensor([[0, 20, 21], [0, 22, 1]])
    logits, _ = model(src, prev_output_tokens=prev, patch_images=torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    # image-code tables and code LN are only used by image generation; rows for codes are checked elsewhere
    code_only = (
        "image_rel_pos_table_list",
        "code_layernorm_embedding",
        "embed_image_positions",
        "image_pos_ln",
    )
    for name, p in model.named_parameters():
        if name.startswith("decoder.") and any(c in name for c in code_only):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
