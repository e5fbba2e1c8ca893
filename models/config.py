"""The OFA model configuration: one typed dataclass whose field names are OFA's argument names.

The original hides the trained architecture in argparse defaults spread over ``ofa_*_architecture``
functions and 38 shell scripts (spec §1.1). Here every setting lives in one dataclass, the presets in
``models/presets.py`` are complete instances of it, and the field names are exactly OFA's ``args``
names so a released checkpoint's stored ``cfg["model"]`` maps onto it one to one and back
(``from_ofa_args`` / ``to_ofa_args``).

It lives in its own module (not ``ofa.py``) so that the encoder, decoder and layers can import it
without an import cycle.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, fields
from typing import Any

logger = logging.getLogger(__name__)

# Bottleneck block counts of the truncated ResNet (stem + layer1..3 only), spec §1.2.
# "resnet18" is the smallest depth the original accepts (used by tests); it still uses Bottlenecks.
RESNET_LAYERS: dict[str, tuple[int, int, int]] = {
    "resnet18": (2, 2, 2),
    "resnet34": (3, 4, 6),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}

ACTIVATIONS = ("gelu", "relu")


@dataclass
class OFAConfig:
    """Every setting that determines the OFA network. Defaults are ``ofa_large_architecture``'s."""

    arch: str = "ofa_large"
    vocab_size: int = 59457
    pad: int = 1
    # transformer sizes
    encoder_embed_dim: int = 1024
    encoder_ffn_embed_dim: int = 4096
    encoder_layers: int = 12
    encoder_attention_heads: int = 16
    decoder_embed_dim: int = 1024
    decoder_ffn_embed_dim: int = 4096
    decoder_layers: int = 12
    decoder_attention_heads: int = 16
    resnet_type: str = "resnet152"
    activation_fn: str = "gelu"
    # the flags every released checkpoint was trained with (spec §1.1, "effective configuration")
    encoder_normalize_before: bool = True
    decoder_normalize_before: bool = True
    share_decoder_input_output_embed: bool = True
    share_all_embeddings: bool = True
    layernorm_embedding: bool = True
    patch_layernorm_embedding: bool = True
    code_layernorm_embedding: bool = True
    add_type_embedding: bool = True
    scale_attn: bool = True
    scale_fc: bool = True
    scale_heads: bool = True
    scale_resids: bool = False
    disable_entangle: bool = True
    entangle_position_embedding: bool = False
    no_scale_embedding: bool = True
    # position / bucket settings
    token_bucket_size: int = 256
    image_bucket_size: int = 42
    attn_scale_factor: float = 2.0
    code_image_size: int = 128
    max_source_positions: int = 1024
    max_target_positions: int = 1024
    # image input (task settings the original model also reads, spec §1.11)
    patch_image_size: int = 480
    orig_patch_image_size: int = 256
    interpolate_position: bool = False
    # regularisation
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    relu_dropout: float = 0.0
    resnet_drop_path_rate: float = 0.0
    encoder_drop_path_rate: float = 0.0
    decoder_drop_path_rate: float = 0.0
    # freezing / normalisation choices
    freeze_resnet: bool = False
    freeze_encoder_embedding: bool = False
    freeze_decoder_embedding: bool = False
    sync_bn: bool = False

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Refuse settings this implementation does not build, naming the flag (no silent fallback)."""
        if self.resnet_type not in RESNET_LAYERS:
            raise ValueError(f"unknown --resnet-type {self.resnet_type!r}; known: {sorted(RESNET_LAYERS)}")
        if self.activation_fn not in ACTIVATIONS:
            raise ValueError(f"unknown --activation-fn {self.activation_fn!r}; known: {list(ACTIVATIONS)}")
        for side in ("encoder", "decoder"):
            dim, heads = getattr(self, f"{side}_embed_dim"), getattr(self, f"{side}_attention_heads")
            if dim % heads:
                raise ValueError(f"--{side}-embed-dim {dim} is not divisible by --{side}-attention-heads {heads}")
        unsupported = {
            "encoder_normalize_before": False,
            "decoder_normalize_before": False,
            "share_all_embeddings": False,
            "share_decoder_input_output_embed": False,
        }
        for name, bad in unsupported.items():
            if getattr(self, name) == bad:
                flag = "--" + name.replace("_", "-")
                raise ValueError(
                    f"{flag}={bad} is not supported: every released OFA model uses {flag}={not bad} "
                    "(pre-LayerNorm, one embedding shared by encoder, decoder and output projection)"
                )
        if self.encoder_embed_dim != self.decoder_embed_dim:
            raise ValueError("--share-all-embeddings needs --encoder-embed-dim == --decoder-embed-dim")
        if self.patch_image_size % 16:
            raise ValueError(f"--patch-image-size {self.patch_image_size} must be a multiple of 16")

    # ------------------------------------------------------------------ derived values
    @property
    def embed_dim(self) -> int:
        return self.encoder_embed_dim

    @property
    def resnet_layers(self) -> tuple[int, int, int]:
        return RESNET_LAYERS[self.resnet_type]

    @property
    def ffn_activation_dropout(self) -> float:
        # fairseq falls back to relu_dropout when activation_dropout is 0 (spec §1.6)
        return self.activation_dropout or self.relu_dropout

    # ------------------------------------------------------------------ conversion
    def replace(self, **changes: Any) -> OFAConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> OFAConfig:
        """Build from a plain dict, rejecting unknown keys with the list of known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown OFA model settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_ofa_args(cls, args: dict[str, Any], base: OFAConfig | None = None) -> OFAConfig:
        """Map an original checkpoint's stored arguments (all CLI args, model and task mixed) onto a config.

        Settings absent from ``args`` keep the value of ``base`` (the preset named by the stored arch,
        mirroring how the original's arch functions fill in defaults); unrelated args are ignored.
        """
        base = base or cls()
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in args.items() if k in known and v is not None}
        if "_name" in args and "arch" not in values:
            values["arch"] = args["_name"]
        if isinstance(values.get("attn_scale_factor"), int):
            values["attn_scale_factor"] = float(values["attn_scale_factor"])
        return dataclasses.replace(base, **values)

    def to_ofa_args(self) -> dict[str, Any]:
        """The stored-argument form written into checkpoints (OFA's names, plus ``_name`` = arch)."""
        args = self.to_dict()
        args["_name"] = self.arch
        args["decoder_output_dim"] = self.decoder_embed_dim
        args["decoder_input_dim"] = self.decoder_embed_dim
        return args
