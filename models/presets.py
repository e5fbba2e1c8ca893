"""Named model sizes: complete configurations of the released OFA models (spec §1.1 table).

Each preset builds exactly the released network with no extra flags: the architecture defaults of
``ofa_large_architecture`` plus the flags every pretraining/finetuning script passes
(``--scale-attn --scale-fc --scale-heads --disable-entangle ...``), which are the dataclass defaults.
``ofa_test`` is a tiny preset for unit tests (the golden "small" model's shape).
"""

from __future__ import annotations

from models.config import OFAConfig


def _size(arch: str, dim: int, layers: tuple[int, int], heads: int, resnet: str, ffn: int = 0, **extra) -> OFAConfig:
    ffn = ffn or 4 * dim
    return OFAConfig(
        arch=arch,
        encoder_embed_dim=dim,
        decoder_embed_dim=dim,
        encoder_ffn_embed_dim=ffn,
        decoder_ffn_embed_dim=ffn,
        encoder_layers=layers[0],
        decoder_layers=layers[1],
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        resnet_type=resnet,
        **extra,
    )


PRESETS: dict[str, OFAConfig] = {
    "ofa_tiny": _size("ofa_tiny", 256, (4, 4), 4, "resnet50", patch_image_size=256),
    "ofa_medium": _size("ofa_medium", 512, (4, 4), 8, "resnet101", patch_image_size=256),
    "ofa_base": _size("ofa_base", 768, (6, 6), 12, "resnet101", patch_image_size=384),
    "ofa_large": _size("ofa_large", 1024, (12, 12), 16, "resnet152", patch_image_size=480),
    "ofa_huge": _size("ofa_huge", 1280, (24, 12), 16, "resnet152", patch_image_size=480),
    # the golden fixtures' "small" model: ofa_tiny with 2+2 layers of width 64 and the smallest ResNet
    "ofa_test": _size("ofa_test", 64, (2, 2), 4, "resnet18", ffn=128, patch_image_size=64),
}


def get_preset(name: str) -> OFAConfig:
    """A fresh copy of the named preset; unknown names raise with the list of known ones."""
    if name not in PRESETS:
        raise KeyError(f"unknown OFA model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace()
