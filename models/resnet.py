"""OFA's image backbone (spec §1.2): a torchvision-style ResNet v1.5 cut after ``layer3``.

Only the stem and ``layer1..layer3`` exist (1024 output channels at stride 16); there is no layer4,
pooling or classifier. Blocks are always Bottlenecks, even for the "resnet18"/"resnet34" depths.
Block 0 of each stage has no drop-path; block i >= 1 gets ``linspace(0, rate, blocks)[i]``.
Normalisation is live BatchNorm by default, ``FrozenBatchNorm2d`` with ``--freeze-resnet`` and
SyncBatchNorm (eps 1e-3, as the original) with ``--sync-bn``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from models.layers import DropPath, layer_drop_rates


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers (detectron2 style)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels) - eps)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints trained with live BatchNorm carry a counter this module does not have
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _sync_bn(channels: int) -> nn.Module:
    return nn.SyncBatchNorm(channels, eps=1e-3, momentum=0.1)


def norm_layer_for(freeze: bool, sync: bool) -> Callable[[int], nn.Module]:
    if sync:
        return _sync_bn
    return FrozenBatchNorm2d if freeze else nn.BatchNorm2d


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, width: int, stride: int, norm: Callable, drop_path_rate: float = 0.0):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)  # v1.5: stride here
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = norm(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), norm(out))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(identity + self.drop_path(out))


class ResNet(nn.Module):
    """Stem + three Bottleneck stages: (B, 3, H, W) -> (B, 1024, H/16, W/16)."""

    def __init__(self, blocks: tuple[int, int, int], norm: Callable = nn.BatchNorm2d, drop_path_rate: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (width, count) in enumerate(zip((64, 128, 256), blocks, strict=True)):
            stage = self._stage(inplanes, width, count, 1 if i == 0 else 2, norm, drop_path_rate)
            self.add_module(f"layer{i + 1}", stage)
            inplanes = width * Bottleneck.expansion
        self.reset_parameters()

    @staticmethod
    def _stage(inplanes: int, width: int, count: int, stride: int, norm: Callable, rate: float) -> nn.Sequential:
        rates = layer_drop_rates(rate, count)
        first = Bottleneck(inplanes, width, stride, norm)  # the first block never drops its path
        rest = [Bottleneck(width * Bottleneck.expansion, width, 1, norm, rates[i]) for i in range(1, count)]
        return nn.Sequential(first, *rest)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.SyncBatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))
