"""Checkpoints at the model level: our files round-trip bit-identically in the original's layout, hostile
files are refused through from_pretrained, and fairseq's load-time upgrades are reproduced."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from models import build_model, from_pretrained, get_preset, save_pretrained
from models.checkpoint_compat import upgrade_state_dict
from utils.checkpoint import UnsafeCheckpointError, load_checkpoint_file


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = build_model(get_preset("ofa_test"))
    model.task_args = {"_name": "caption", "patch_image_size": 64}
    return model.eval()


def test_golden_written_checkpoint_has_the_original_layout(tmp_path, small_model, golden_ckpt_path):
    path = tmp_path / "ckpt.pt"
    save_pretrained(small_model, path)
    ours, original = load_checkpoint_file(path), load_checkpoint_file(golden_ckpt_path)
    assert list(ours) == list(original)
    assert list(ours["cfg"]) == list(original["cfg"])
    assert isinstance(ours["cfg"]["model"], argparse.Namespace)
    assert ours["cfg"]["model"].arch == ours["cfg"]["model"]._name == "ofa_test"
    assert ours["cfg"]["task"]["_name"] == "caption"
    assert list(ours["model"]) == list(original["model"])  # same keys in the same order


def test_written_checkpoint_loads_back_bit_identically(tmp_path, small_model):
    path = tmp_path / "ckpt.pt"
    save_pretrained(small_model, path)
    loaded = from_pretrained(path)
    assert loaded.cfg == small_model.cfg
    assert loaded.task_args["patch_image_size"] == 64
    a, b = small_model.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    # plain torch.load (what OFA-era tooling does) reads it too
    raw = torch.load(path, weights_only=False)
    assert torch.equal(raw["model"]["decoder.layers.1.fc2.weight"], a["decoder.layers.1.fc2.weight"])


def test_golden_round_trip_of_the_original_checkpoint(tmp_path, golden_ckpt_path):
    model = from_pretrained(golden_ckpt_path)
    path = tmp_path / "again.pt"
    save_pretrained(model, path)
    again = from_pretrained(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "args": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="system") as err:
        from_pretrained(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        from_pretrained(tmp_path / "nope.pt")


def test_ema_weights_are_loaded_when_asked(tmp_path, small_model):
    path = tmp_path / "ema.pt"
    ema = {k: (v.half() if v.is_floating_point() else v) for k, v in small_model.state_dict().items()}
    ema["decoder.layer_norm.bias"] = torch.full_like(ema["decoder.layer_norm.bias"], 0.5)
    save_pretrained(small_model, path, extra_state={"ema": ema})
    assert torch.equal(from_pretrained(path).decoder.layer_norm.bias, small_model.decoder.layer_norm.bias)
    loaded = from_pretrained(path, ema=True)
    assert (loaded.decoder.layer_norm.bias == 0.5).all()
    assert loaded.decoder.layer_norm.bias.dtype == torch.float32


def _legacy_state(model) -> dict:
    state = dict(model.state_dict())
    for side in ("encoder", "decoder"):
        p = f"{side}.layers.0.self_attn."
        state[p + "in_proj_weight"] = torch.cat([state.pop(p + n + "_proj.weight") for n in "qkv"])
        state[p + "in_proj_bias"] = torch.cat([state.pop(p + n + "_proj.bias") for n in "qkv"])
    ln = "decoder.layers.1."
    state[ln + "layer_norms.1.weight"] = state.pop(ln + "encoder_attn_layer_norm.weight")
    del state["decoder.output_projection.weight"]
    return state


def test_legacy_names_are_upgraded(small_model):
    fresh = build_model(get_preset("ofa_test"))
    upgraded = upgrade_state_dict(fresh, _legacy_state(small_model))
    fresh.load_state_dict(upgraded, strict=True)
    for key, value in small_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_smaller_vocabulary_and_image_table_get_rows_appended(small_model, caplog):
    state = dict(small_model.state_dict())
    for key in (
        "encoder.embed_tokens.weight",
        "decoder.embed_tokens.weight",
        "decoder.output_projection.weight",
    ):
        state[key] = state[key][:59000]
    state["decoder.embed_image_positions.weight"] = state["decoder.embed_image_positions.weight"][:1000]
    del state["encoder.pos_ln.bias"]
    fresh = build_model(get_preset("ofa_test"))
    fresh.load_state_dict(upgrade_state_dict(fresh, state), strict=True)
    emb = fresh.encoder.embed_tokens.weight
    assert torch.equal(emb[:59000], small_model.encoder.embed_tokens.weight[:59000])
    assert emb.shape == (59457, 64) and emb[59000:].abs().sum() > 0
    assert fresh.decoder.embed_image_positions.weight.shape == (1765, 64)
    assert "encoder.pos_ln.bias" in caplog.text  # filled from the fresh model, and said so


def test_derived_buffers_are_regenerated_not_trusted(small_model):
    state = dict(small_model.state_dict())
    state["decoder.image_position_idx"] = torch.zeros(1794, dtype=torch.long)  # a code_image_size=256 model
    fresh = build_model(get_preset("ofa_test"))
    fresh.load_state_dict(upgrade_state_dict(fresh, state), strict=True)
    assert torch.equal(fresh.decoder.image_position_idx, small_model.decoder.image_position_idx)


def test_unexpected_entries_are_an_error_naming_them(small_model):
    state = dict(small_model.state_dict())
    state["encoder.layers.0.adapter.down_proj.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="adapter.down_proj"):
        upgrade_state_dict(build_model(get_preset("ofa_test")), state)


def test_wrong_vocabulary_is_an_error():
    model = build_model(get_preset("ofa_test"))
    state = dict(model.state_dict())
    for key in (
        "encoder.embed_tokens.weight",
        "decoder.embed_tokens.weight",
        "decoder.output_projection.weight",
    ):
        state[key] = torch.zeros(60000, 64)
    with pytest.raises(ValueError, match="--bpe-dir"):
        upgrade_state_dict(model, state)
