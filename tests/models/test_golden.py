"""Parity with the original OFA code: the golden fixtures of ../shared/golden (README there)."""

from __future__ import annotations

import pytest
import torch

from criterions.label_smoothed_ce import AdjustLabelSmoothedCrossEntropy, LabelSmoothedCEConfig
from models import from_pretrained


@pytest.fixture(scope="module")
def model(golden_ckpt_path):
    return from_pretrained(golden_ckpt_path)


def _sample(golden) -> dict:
    i = golden["inputs"]
    net_input = {k: i[k] for k in ("src_tokens", "src_lengths", "patch_images", "patch_masks", "prev_output_tokens")}
    return {"net_input": net_input, "target": i["target"], "ntokens": i["ntokens"]}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_golden_config_from_checkpoint(model):
    cfg = model.cfg
    assert (cfg.encoder_embed_dim, cfg.encoder_layers, cfg.decoder_layers, cfg.resnet_type) == (
        64,
        2,
        2,
        "resnet18",
    )
    assert cfg.scale_attn and cfg.scale_fc and cfg.scale_heads and cfg.disable_entangle
    assert model.task_args["_name"] == "caption" and model.task_args["patch_image_size"] == 64
    assert not model.training
    unique = {id(p): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == 7_986_184


def test_golden_encoder_output(model, golden):
    net_input = _sample(golden)["net_input"]
    with torch.no_grad():
        enc = model.encode(**net_input)
    out = golden["outputs"]
    # the original is time-first (T, B, C)
    assert (enc.hidden.transpose(0, 1) - out["encoder_out"]).abs().max().item() < 1e-5
    assert torch.equal(enc.padding_mask, out["encoder_padding_mask"])
    assert (enc.position_embeddings - out["encoder_position_embeddings"]).abs().max().item() < 1e-5


def test_golden_logits(model, golden):
    with torch.no_grad():
        logits, extra = model(**_sample(golden)["net_input"])
    out = golden["outputs"]
    assert logits.shape == (2, 12, 59457)
    assert (logits - out["decoder_logits"]).abs().max().item() < 1e-5
    last_hidden = extra["inner_states"][-1].transpose(0, 1)
    assert (last_hidden - out["decoder_last_hidden_pre_ln"]).abs().max().item() < 1e-5


def _loss(model, golden, train: bool):
    crit = AdjustLabelSmoothedCrossEntropy(LabelSmoothedCEConfig(label_smoothing=0.1))
    model.train(train)
    try:
        return crit(model, _sample(golden))
    finally:
        model.eval()


def test_golden_loss_eval_mode(model, golden):
    with torch.no_grad():
        loss, sample_size, log = _loss(model, golden, train=False)
    out = golden["outputs"]
    assert sample_size == out["sample_size_eval"] == 16
    assert abs(loss.item() / out["loss_eval"].item() - 1) < 1e-5
    assert abs(log["nll_loss"].item() / out["nll_loss_eval"].item() - 1) < 1e-5


def test_golden_loss_and_gradients_train_mode(golden_ckpt_path, golden):
    model = from_pretrained(golden_ckpt_path)  # fresh: train mode updates BatchNorm statistics
    loss, _, log = _loss(model, golden, train=True)
    out = golden["outputs"]
    assert abs(loss.item() / out["loss_train_mode"].item() - 1) < 1e-5
    assert abs(log["nll_loss"].item() / out["nll_loss_train_mode"].item() - 1) < 1e-5
    loss.backward()
    grads = out["grads_train_mode"]
    params = dict(model.named_parameters())
    for name in [k for k in grads if not k.startswith("embed_tokens")]:
        assert _rel(params[name].grad, grads[name]) < 1e-4, name
    shared = model.embed_tokens.weight.grad
    assert _rel(shared[grads["embed_tokens_grad_rows"]], grads["embed_tokens_grad_at_rows"]) < 1e-4
    assert abs(shared.norm().item() / grads["embed_tokens_grad_norm"].item() - 1) < 1e-4
    total = torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]).norm()
    assert abs(total.item() / out["total_grad_norm_train_mode"].item() - 1) < 1e-4
