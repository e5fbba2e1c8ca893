"""Optimisation pieces with fairseq's exact semantics, as OFA trains with them (spec §7.4, §7.5).

- ``FairseqAdam``: Adam with ``denom = sqrt(v) + eps``, ``step = lr * sqrt(1 - b2^t) / (1 - b1^t)`` and decoupled
  weight decay ``p -= wd * lr * p`` applied to every parameter before the update (fairseq's ``adam``),
  computed by torch's fused AdamW.
- ``PolynomialDecay``: linear (power 1) warm-up then polynomial decay to ``end_learning_rate``; the warm-up
  length is ``int(total * warmup_ratio)`` once the total is known (OFA's ``lr_reinit``).
- ``DynamicLossScaler``: fp16 loss scaling; an overflow skips the step and halves the scale, ``scale_window``
  clean steps double it; falling below ``min_loss_scale`` is an error, as in fairseq.
- ``EMA``: exponential moving average of the weights; integer buffers are copied (OFA's fork change).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


class FairseqAdam(torch.optim.AdamW):
    """fairseq's Adam, run by torch's fused AdamW (one memory pass instead of nine).

    fairseq computes ``p -= wd*lr*p; p -= lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps)``, which is exactly AdamW
    (decoupled decay first, then ``lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps')``) with ``eps' = eps / sqrt(bc2)``,
    ``bc2 = 1 - beta2^t``. So each step sets the group's epsilon for the coming step count.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        params = list(params)
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused or None)
        for group in self.param_groups:
            group["fairseq_eps"] = eps

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            steps = [self.state[p]["step"] for p in group["params"] if p.grad is not None and "step" in self.state[p]]
            upcoming = int(max(steps)) + 1 if steps else 1
            group["eps"] = group["fairseq_eps"] / math.sqrt(1 - group["betas"][1] ** upcoming)
        return super().step(closure)


@dataclass
class PolynomialDecay:
    """fairseq's ``polynomial_decay`` schedule; ``step_update(n)`` is called after every update n."""

    optimizer: torch.optim.Optimizer
    peak_lr: float
    total_num_update: int
    warmup_updates: int = 0
    end_learning_rate: float = 0.0
    power: float = 1.0

    def __post_init__(self) -> None:
        factor = 1.0 / self.warmup_updates if self.warmup_updates > 0 else 1.0
        self.set_lr(factor * self.peak_lr)

    def set_lr(self, lr: float) -> None:
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def reinit(self, total_num_update: int, warmup_ratio: float, num_updates: int) -> None:
        """OFA's lr_reinit: derive the schedule length (and warm-up) from the number of epochs."""
        self.total_num_update = total_num_update
        self.warmup_updates = int(total_num_update * warmup_ratio)
        self.step_update(num_updates) if num_updates > 0 else self.__post_init__()

    def lr_at(self, num_updates: int) -> float:
        if self.warmup_updates > 0 and num_updates <= self.warmup_updates:
            return num_updates / self.warmup_updates * self.peak_lr
        if num_updates >= self.total_num_update:
            return self.end_learning_rate
        span = self.total_num_update - self.warmup_updates
        remaining = 1 - (num_updates - self.warmup_updates) / span
        return (self.peak_lr - self.end_learning_rate) * remaining**self.power + self.end_learning_rate

    def step_update(self, num_updates: int) -> float:
        self.set_lr(self.lr_at(num_updates))
        return self.lr

    def state_dict(self) -> dict:
        return {
            "lr": self.lr,
            "total_num_update": self.total_num_update,
            "warmup_updates": self.warmup_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.total_num_update, self.warmup_updates = state["total_num_update"], state["warmup_updates"]
        self.set_lr(state["lr"])


class DynamicLossScaler:
    def __init__(self, init_scale: float = 128.0, scale_window: int = 2000, min_loss_scale: float = 1e-4):
        self.scale, self.window, self.min_scale = float(init_scale), scale_window, min_loss_scale
        self.clean_steps = 0
        self.overflows = 0

    def update(self, overflow: bool) -> None:
        if overflow:
            self.overflows += 1
            self.clean_steps = 0
            self.scale /= 2.0
            if self.scale < self.min_scale:
                raise FloatingPointError(
                    f"fp16 loss scale fell below --min-loss-scale {self.min_scale}: the loss keeps overflowing "
                    "(try --bf16, a lower --lr or a higher --min-loss-scale)"
                )
        else:
            self.clean_steps += 1
            if self.clean_steps % self.window == 0:
                self.scale *= 2.0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "clean_steps": self.clean_steps, "overflows": self.overflows}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.clean_steps, self.overflows = (
            state["scale"],
            state["clean_steps"],
            state["overflows"],
        )


class EMA:
    """Exponential moving average of a model's state (parameters and float buffers, fp32 copies)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, start_update: int = 0):
        self.decay, self.start_update = decay, start_update
        self.state = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                      for k, v in model.state_dict().items()}  # fmt: skip

    @torch.no_grad()
    def step(self, model: nn.Module, num_updates: int) -> None:
        decay = self.decay if num_updates >= self.start_update else 0.0
        for key, value in model.state_dict().items():
            ema = self.state[key]
            if not value.is_floating_point() or "version" in key:
                ema.copy_(value)
            elif decay == 0.0:
                ema.copy_(value.float())
            else:
                ema.mul_(decay).add_(value.float(), alpha=1 - decay)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for key, value in state.items():
            self.state[key].copy_(value)
