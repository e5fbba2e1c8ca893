"""The convolutional encoder and decoder of taming-transformers' VQGAN, as OFA's image tokenizer uses them.

Follows ``taming/modules/diffusionmodules/model.py`` (Esser et al. 2021, "Taming Transformers"): a ResNet
encoder that halves the resolution ``len(ch_mult) - 1`` times, with self-attention at the latent resolutions
listed in ``attn_resolutions``, and a mirror-image decoder. Attribute names and registration order reproduce
taming's so that its Lightning ``state_dict`` loads with ``strict=True`` (``down.0.block.1.norm1``,
``mid.attn_1.q``, ``up.3.upsample.conv``, ...). The diffusion-model timestep embedding of the original blocks
is never used by the VQGAN (``temb_channels=0``), so it is not modelled.

Inference details that matter for matching codes:

* GroupNorm with 32 groups and ``eps=1e-6``; the non-linearity is swish (``x * sigmoid(x)``).
* Downsampling pads one pixel at the right and bottom only, then a stride-2 3x3 conv without padding.
* Upsampling is nearest-neighbour x2 followed by a 3x3 conv.
* Attention is single-head over the ``H*W`` positions with scale ``C ** -0.5`` (SDPA's default).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    """taming's ``Normalize``: 32 groups, eps 1e-6, affine."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm -> swish -> conv, twice, plus a shortcut (a 1x1 ``nin_shortcut`` when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        else:
            self.nin_shortcut = None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h


class AttnBlock(nn.Module):
    """Residual single-head self-attention over all spatial positions, with 1x1 convs as projections."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        # (B, C, H, W) -> (B, 1, H*W, C): one head, positions as the sequence
        q, k, v = (proj(normed).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # scale C ** -0.5, as taming's explicit softmax
        out = out.transpose(2, 3).reshape(b, c, h, w)  # back to (B, C, H, W)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding (0, 1, 0, 1): an even side is exactly halved."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (empty or one per block), and a resampler."""

    def __init__(self, widths: list[tuple[int, int]], attention: bool, dropout: float) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin, cout, dropout) for cin, cout in widths)
        self.attn = nn.ModuleList(AttnBlock(cout) for _, cout in widths) if attention else nn.ModuleList()

    def forward(self, x: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn) > 0:
                x = self.attn[i](x)
        return x


class MidBlock(nn.Module):
    """ResnetBlock -> attention -> ResnetBlock at the lowest resolution (taming's ``mid``)."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> latent (B, z_channels, H/f, W/f) with f = 2 ** (len(ch_mult) - 1)."""

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        in_channels: int,
        resolution: int,
        z_channels: int,
        double_z: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        width, res = ch, resolution  # attention placement follows the configured, not the actual, size
        for level, mult in enumerate(ch_mult):
            widths = [(width if i == 0 else ch * mult, ch * mult) for i in range(num_res_blocks)]
            down = Level(widths, res in attn_resolutions, dropout)
            width = ch * mult
            if level != len(ch_mult) - 1:
                down.downsample = Downsample(width)
                res //= 2
            self.down.append(down)
        self.mid = MidBlock(width, dropout)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, 2 * z_channels if double_z else z_channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for down in self.down:
            h = down(h)
            if hasattr(down, "downsample"):
                h = down.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) -> image (B, out_ch, h*f, w*f); ``up[0]`` is the full-resolution level."""

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_resolutions: tuple[int, ...],
        resolution: int,
        z_channels: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        width = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, width, kernel_size=3, padding=1)
        self.mid = MidBlock(width, dropout)
        levels: list[Level] = []
        for level in reversed(range(len(ch_mult))):  # built from the lowest resolution up, as in taming
            out = ch * ch_mult[level]
            widths = [(width if i == 0 else out, out) for i in range(num_res_blocks + 1)]
            up = Level(widths, res in attn_resolutions, dropout)
            width = out
            if level != 0:
                up.upsample = Upsample(width)
                res *= 2
            levels.insert(0, up)
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(width)
        self.conv_out = nn.Conv2d(width, out_ch, kernel_size=3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for up in reversed(self.up):
            h = up(h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@torch.no_grad()
def gumbel_argmax(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``argmax(logits + g)`` over dim 1 with g ~ Gumbel(0, 1): a sample from ``softmax(logits)``.

    This is what taming's ``GumbelQuantize`` returns as indices even in eval mode (``F.gumbel_softmax`` with
    ``hard=True`` still adds noise; the temperature does not change the argmax).
    """
    noise = torch.empty_like(logits).exponential_(generator=generator).log().neg()  # Gumbel(0, 1)
    return (logits + noise).argmax(dim=1)
