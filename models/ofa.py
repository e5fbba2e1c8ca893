"""The OFA encoder-decoder (spec §1.8): one shared token embedding, a multimodal encoder and a decoder.

``OFAModel.forward`` takes OFA's ``net_input`` keyword arguments and returns ``(logits (B, T, V), extra)``
like the original, so task and criterion code written against OFA's batches carries over. Weights are
initialised as the original's ``init_bert_params`` (every Linear/Embedding N(0, 0.02), padding row and
biases zero; ResNet convs keep Kaiming init); this matters only when training from scratch.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from models.config import OFAConfig
from models.decoder import Decoder, DecoderState
from models.encoder import Encoder, EncoderOut

logger = logging.getLogger(__name__)


class OFAModel(nn.Module):
    def __init__(self, cfg: OFAConfig):
        super().__init__()
        if cfg.interpolate_position:
            raise ValueError("--interpolate-position is not supported yet")
        self.cfg = cfg
        embed_tokens = nn.Embedding(cfg.vocab_size, cfg.encoder_embed_dim, padding_idx=cfg.pad)
        self.encoder = Encoder(cfg, embed_tokens)
        self.decoder = Decoder(cfg, embed_tokens)
        self.apply(_init_bert_params)
        if cfg.freeze_encoder_embedding or cfg.freeze_decoder_embedding:
            # the matrix is shared, so this also freezes the tied output projection (spec §1.8)
            embed_tokens.weight.requires_grad_(False)

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def forward(
        self,
        src_tokens: Tensor,
        src_lengths: Tensor | None = None,
        prev_output_tokens: Tensor | None = None,
        patch_images: Tensor | None = None,
        patch_images_2: Tensor | None = None,
        patch_masks: Tensor | None = None,
        code_masks: Tensor | None = None,
        sample_patch_num: int | None = None,
        features_only: bool = False,
        return_all_hiddens: bool = False,
    ) -> tuple[Tensor, dict]:
        """OFA's ``net_input`` -> (logits (B, T, V) or features (B, T, D), extra).

        ``src_lengths`` is accepted for compatibility and unused, as in the original.
        ``extra`` holds ``encoder_out`` (EncoderOut) and ``inner_states`` (decoder layer outputs).
        """
        if prev_output_tokens is None:
            raise ValueError("OFAModel.forward needs prev_output_tokens (the decoder input, starting with bos)")
        if patch_images_2 is not None:
            raise ValueError("patch_images_2 is not supported (the original's second-image path is unusable)")
        encoder_out = self.encoder(
            src_tokens, patch_images, patch_masks, sample_patch_num, return_all_hiddens=return_all_hiddens
        )
        out, extra = self.decoder(prev_output_tokens, encoder_out, code_masks, features_only=features_only)
        extra["encoder_out"] = encoder_out
        return out, extra

    def encode(self, **net_input) -> EncoderOut:
        """Run the encoder alone on ``net_input`` (extra keys such as prev_output_tokens are ignored)."""
        return self.encoder(
            net_input["src_tokens"],
            net_input.get("patch_images"),
            net_input.get("patch_masks"),
            net_input.get("sample_patch_num"),
        )

    def decode_step(
        self,
        prev_output_tokens: Tensor,
        encoder_out: EncoderOut,
        state: DecoderState,
        code_masks: Tensor | None = None,
    ) -> Tensor:
        """Logits (B, V) of the next token, using and extending the key/value cache in ``state``."""
        logits, _ = self.decoder(prev_output_tokens, encoder_out, code_masks, state=state)
        return logits[:, -1]


def _init_bert_params(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(mean=0.0, std=0.02)
        if module.bias is not None:
            module.bias.data.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.data.normal_(mean=0.0, std=0.02)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()


def build_model(cfg: OFAConfig, device: torch.device | str | None = None) -> OFAModel:
    """Build a randomly initialised model; ``device="meta"`` builds shapes only (no memory)."""
    with torch.device(device or "cpu"):
        return OFAModel(cfg)


def fast_inference(model: OFAModel, dtype: torch.dtype = torch.bfloat16) -> OFAModel:
    """Cast the weights to ``dtype`` and store the ResNet channels-last: faster inference, not bit-exact.

    Index buffers keep their integer type. Feed ``patch_images`` in the same dtype.
    """
    model = model.to(dtype).eval()
    model.encoder.embed_images.to(memory_format=torch.channels_last)
    return model
