"""Text-to-image generation (OFA ``image_gen`` task, spec §4.8): the decoder writes VQGAN ``<code_i>`` tokens.

TSV columns after ``--selected-cols``, as in the original dataset:

- 3 columns ``id, caption, codes`` (the recipes' ``--selected-cols 0,2,1`` of ``id, codes, caption`` files);
- 2 columns ``id, caption`` (inference only: the codes are zeros);
- 4 columns ``id, image, caption, codes`` (the image is the reference for ``--eval-clip-method ii_sim``).

Source ``" what is the complete image? caption: {first max_src_length words}"``; target the codes shifted into
the code-token range, then eos; the batch sets ``code_masks`` so the decoder uses its image-code path.
Generation always samples (top-k 256 in the recipes) inside ``--constraint-range`` with exactly
``(code_image_size / 8) ** 2`` tokens; ``eval_step`` draws ``beam x sampling_times`` images per caption, decodes
them with the VQGAN, reranks them with CLIP (caption text or reference image), writes them best first to
``--gen-images-path``/{all_results,top1} and scores a caption by its best CLIP similarity.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from data.images import decode_base64_image
from models.generate import GenerationConfig, SequenceGenerator
from tasks.base import TASKS, Task, TaskConfig, int_or_str

logger = logging.getLogger(__name__)

PROMPT = " what is the complete image? caption: {}"
CLIP_METHODS = ("ti_sim", "ii_sim")


@dataclass
class ImageGenConfig(TaskConfig):
    sampling_times: int = field(default=1, metadata={"help": "generation rounds per caption (beam images each)"})
    code_image_size: int = field(default=256, metadata={"help": "image side in pixels; (size/8)^2 code tokens"})
    eval_clip_method: str = field(default="ti_sim", metadata={"help": "CLIP reranking: ti_sim (text) or ii_sim"})
    eval_args: str = "{}"
    scst: bool = False
    scst_args: str = "{}"
    vqgan_model_path: str | None = field(default=None, metadata={"help": "taming VQGAN last.ckpt"})
    vqgan_config_path: str | None = field(default=None, metadata={"help": "taming VQGAN model.yaml"})
    clip_model_path: str | None = field(default=None, metadata={"help": "OpenAI-format CLIP ViT-B/16 .pt"})
    gen_images_path: str = field(default="", metadata={"help": "write generated images here during evaluation"})


@TASKS.register("image_gen", ImageGenConfig)
class ImageGenTask(Task):
    metric_name = "score"
    passthrough_keys = ("caption", "code_image")

    def __init__(self, cfg: ImageGenConfig, tokenizer=None):
        super().__init__(cfg, tokenizer)
        if cfg.eval_clip_method not in CLIP_METHODS:
            raise ValueError(f"--eval-clip-method must be one of {CLIP_METHODS}, got {cfg.eval_clip_method!r}")
        if cfg.code_image_size % 8:
            raise ValueError(
                f"--code-image-size must be a multiple of 8 (the VQGAN's factor), got {cfg.code_image_size}"
            )
        self.grid = cfg.code_image_size // 8
        self.num_codes = self.grid**2
        self.code_offset = len(self.tokenizer) - cfg.code_dict_size - cfg.num_bins  # token id of <code_0>
        self._vqgan: Any = None
        self._clip: Any = None
        if cfg.scst:
            self.scst_generator = self.build_generator(GenerationConfig.from_args(cfg.scst_args))

    # ------------------------------------------------------------------ data
    def build_sample(self, row: list[str], split: str, index: int) -> dict[str, Any]:
        image = None
        if len(row) == 2:
            (uniq_id, text), codes = row, [0] * self.num_codes
        elif len(row) == 3:
            uniq_id, text, code_text = row
            codes = self.parse_codes(code_text)
        elif len(row) == 4:
            uniq_id, image, text, code_text = row
            codes = self.parse_codes(code_text)
        else:
            raise ValueError(f"expected 2, 3 or 4 columns (id, [image,] caption[, codes]), got {len(row)}")
        caption = " ".join(text.strip().split()[: self.cfg.max_src_length])
        tokens = torch.tensor(codes, dtype=torch.long) + self.code_offset
        return {
            "id": uniq_id,
            "source": self.encode_text(PROMPT.format(caption), bos=True, eos=True),
            "code_mask": True,
            "target": torch.cat([tokens, torch.tensor([self.eos])]),
            "prev_output_tokens": torch.cat([torch.tensor([self.bos]), tokens]),
            "caption": caption,
            "code_image": image,
        }

    def parse_codes(self, text: str) -> list[int]:
        try:
            codes = [int(v) for v in text.split()]
        except ValueError:
            raise ValueError(f"image codes must be space-separated integers, got {text[:40]!r}") from None
        if len(codes) != self.num_codes:
            raise ValueError(f"expected {self.num_codes} codes for --code-image-size {self.cfg.code_image_size}, "
                             f"got {len(codes)}")  # fmt: skip
        if min(codes) < 0 or max(codes) >= self.cfg.code_dict_size:
            raise ValueError(f"image codes must lie in [0, {self.cfg.code_dict_size}), got {min(codes)}..{max(codes)}")
        return codes

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(samples)
        if batch:
            batch["net_input"]["code_masks"] = torch.tensor([bool(s["code_mask"]) for s in samples])
        return batch

    # ------------------------------------------------------------------ VQGAN and CLIP (loaded on first use)
    @property
    def vqgan(self):
        if self._vqgan is None:
            if not (self.cfg.vqgan_model_path and self.cfg.vqgan_config_path):
                raise ValueError("image_gen needs --vqgan-model-path and --vqgan-config-path to turn codes into images")
            from models.vqgan import load_vqgan

            self._vqgan = load_vqgan(self.cfg.vqgan_model_path, self.cfg.vqgan_config_path)
        return self._vqgan

    @vqgan.setter
    def vqgan(self, model) -> None:
        self._vqgan = model

    @property
    def clip(self):
        if self._clip is None:
            if not self.cfg.clip_model_path:
                raise ValueError("image_gen needs --clip-model-path (OpenAI-format CLIP ViT-B/16) to rank images")
            from models.clip import CLIPScorer

            self._clip = CLIPScorer.from_local(self.cfg.clip_model_path)
        return self._clip

    @clip.setter
    def clip(self, model) -> None:
        self._clip = model

    def codes_to_images(self, tokens: Tensor) -> list[Image.Image]:
        """Code-token rows (N, num_codes) -> PIL images through the VQGAN (on the VQGAN's device)."""
        codes = (tokens - self.code_offset).view(-1, self.grid, self.grid)  # (N, grid, grid)
        vqgan = self.vqgan
        device = next(vqgan.parameters()).device
        with torch.no_grad():
            return vqgan.to_pil(vqgan.decode(codes.to(device)))

    # ------------------------------------------------------------------ generation and evaluation
    def default_generation(self) -> GenerationConfig:
        return GenerationConfig.from_args(self.cfg.eval_args or "{}")

    def build_generator(self, gen_cfg: GenerationConfig | None = None) -> SequenceGenerator:
        """Always sampling, on the image-code path, with exactly ``num_codes`` tokens before eos, inside
        ``--constraint-range`` (the code tokens when it is not given: nothing else can be decoded into pixels)."""
        gen_cfg = gen_cfg or self.default_generation()
        for name in ("min_len", "max_len_b"):
            value = getattr(gen_cfg, name)
            if value not in (self.num_codes, GenerationConfig.__dataclass_fields__[name].default):
                raise ValueError(f"image_gen decodes exactly {self.num_codes} codes; {name}={value} cannot be used")
        allowed = gen_cfg.constraint_range or self.cfg.constraint_range
        allowed = allowed or f"{self.code_offset},{self.code_offset + self.cfg.code_dict_size}"
        gen_cfg = dataclasses.replace(gen_cfg, sampling=True, gen_code=True, min_len=self.num_codes, max_len_a=0.0,
                                      max_len_b=self.num_codes, constraint_range=allowed)  # fmt: skip
        return super().build_generator(gen_cfg)

    def generate_images(self, model, sample: dict, generator: SequenceGenerator) -> list[list[Image.Image]]:
        """``beam x sampling_times`` images per sample, in sampling order."""
        per_sample: list[list[Tensor]] = [[] for _ in sample["id"]]
        for _ in range(self.cfg.sampling_times):
            for i, hypos in enumerate(generator.generate(model, {"net_input": sample["net_input"]})):
                per_sample[i] += [h["tokens"][: self.num_codes] for h in hypos]
        return [self.codes_to_images(torch.stack(rows)) for rows in per_sample]

    def rerank(self, images: list[Image.Image], caption: str, reference: str | None) -> tuple[list[int], Tensor]:
        if self.cfg.eval_clip_method == "ii_sim":
            if not reference:
                raise ValueError("--eval-clip-method ii_sim needs the 4-column layout (id, image, caption, codes)")
            return self.clip.rerank(images, reference_image=decode_base64_image(reference), method="ii_sim")
        return self.clip.rerank(images, text=caption, method="ti_sim")

    def eval_step(self, model, sample: dict, generator: SequenceGenerator | None = None, **options) -> list[dict]:
        model.eval()
        generator = generator or self.build_generator()
        results = []
        all_images = self.generate_images(model, sample, generator)
        for uid, caption, ref, images in zip(sample["id"], sample["caption"], sample["code_image"], all_images,
                                             strict=True):  # fmt: skip
            order, scores = self.rerank(images, caption, ref)
            ranked = [images[j] for j in order]
            record = {"uniq_id": int_or_str(uid), "caption": caption, "score": float(scores[0])}
            if self.cfg.gen_images_path:
                record["images"] = self.dump_images(ranked, caption)
            results.append(record)
        return results

    def dump_images(self, images: list[Image.Image], caption: str) -> list[str]:
        """Write ``all_results/{caption}_{j}.png`` (best first) and ``top1/{caption}_0.png``; returns the paths."""
        name = caption.replace("/", "")[:200] or "image"
        root = Path(self.cfg.gen_images_path)
        paths = []
        for folder, subset in (("all_results", images), ("top1", images[:1])):
            (root / folder).mkdir(parents=True, exist_ok=True)
            for j, image in enumerate(subset):
                path = root / folder / f"{name}_{j}.png"
                image.save(path)
                paths.append(str(path))
        return paths

    def eval_enabled(self) -> bool:
        """Validation samples and CLIP-scores images when a CLIP model is available (the original always does)."""
        return self._clip is not None or bool(self.cfg.clip_model_path)
