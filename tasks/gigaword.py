"""Gigaword headline generation (OFA ``gigaword`` task, spec §4.7 and §6.2): text in, summary out, ROUGE.

TSV columns after ``--selected-cols`` (OFA's scripts: ``0,1``): article, summary. Both go through
``pre_caption`` (lower case, ``-``/``/`` -> space, word limits ``--max-src-length``/``--max-tgt-length``) with
``<unk>`` -> ``unk``. The source is ``' what is the summary of article " {article} "?'`` cut to
``--max-src-length`` BPE tokens, then bos/eos; the target is the summary **without** a leading space (the one
OFA task that does this). The reference for ROUGE is the raw summary, lower-cased.

``--noise-ratio`` (0.2 in OFA's recipe) replaces each target token of ``prev_output_tokens`` (never the bos,
never ``target``) with probability p by a random id in ``[4, len(dict) - code_dict_size - num_bins)``, on every
split, as the original does. Unlike the original, which draws from the global torch RNG, the draw is seeded by
(``--seed``, epoch, row index): a resumed run, a different ``--num-workers`` or a re-read row sees exactly the
same noise, so training resumes bitwise. The task's ``seed`` field shares the training ``--seed`` flag.

Evaluation generates with beam search (default ``--eval-args`` = OFA's recipe: beam 6, lenpen 0.7, max_len_b 32,
no_repeat_ngram_size 3). A hypothesis is decoded, lower-cased, stripped, re-tokenised with ``fix_tokenization``
(PTB style, like the references) and every ``1`` becomes ``#`` (Gigaword masks digits); validation during
training also turns ``<unk>`` into `` unk`` first, as OFA's ``valid_step`` does and its ``evaluate.py`` does not.
Scores are ``utils.metrics.rouge`` (stemmed ROUGE-1/2/L), reported x100 like OFA's validation logs:
``rouge{1,2,L}_f1`` and ``rouge{1,2,L}_recall``; the best-checkpoint metric is ``rougeL_f1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from data.tsv import TSVFile, parse_data_paths
from models.generate import SequenceGenerator
from tasks.base import TASKS, Task, TaskConfig, TaskDataset, pre_caption
from utils.metrics.rouge import ROUGE_TYPES, fix_tokenization, rouge_pair_scores, rouge_scores

logger = logging.getLogger(__name__)

PROMPT = ' what is the summary of article " {} "?'
OFA_EVAL_ARGS = '{"beam":6,"lenpen":0.7,"max_len_b":32,"no_repeat_ngram_size":3}'
METRICS = tuple(f"{kind}_{part}" for kind in ROUGE_TYPES for part in ("f1", "recall"))
FIRST_NOISE_ID = 4  # after <s>, <pad>, </s>, <unk>


@dataclass
class GigawordConfig(TaskConfig):
    eval_rouge: bool = field(default=False, metadata={"help": "generate and report ROUGE during validation"})
    eval_args: str = field(
        default=OFA_EVAL_ARGS, metadata={"help": "generation settings as JSON (default: OFA's Gigaword recipe)"}
    )
    eval_detok: str = field(
        default="space",
        metadata={"help": "detokenizer before scoring; only OFA's default 'space' (none)", "choices": ["space"]},
    )
    eval_detok_args: str = field(default="{}", metadata={"help": "unused: the 'space' detokenizer takes no arguments"})
    eval_print_samples: bool = field(default=False, metadata={"help": "log one hypothesis/reference per batch"})
    noise_ratio: float = field(default=0.0, metadata={"help": "probability of replacing a prev_output token"})
    seed: int = field(default=1, metadata={"help": "random seed (also seeds the prev_output noise)"})


def postprocess_hypothesis(text: str, replace_unk: bool = False) -> str:
    """OFA's hypothesis clean-up: lower, strip, ``fix_tokenization``, (``<unk>`` -> `` unk``), ``1`` -> ``#``."""
    text = fix_tokenization(text.lower().strip())
    if replace_unk:
        text = text.replace("<unk>", " unk")
    return text.replace("1", "#")


class SummaryDataset(TaskDataset):
    """The task's rows for one epoch; adds the (seed, epoch, index)-seeded noise to ``prev_output_tokens``."""

    def __init__(self, task: GigawordTask, table: TSVFile, split: str, epoch: int):
        super().__init__(task, table, split)
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = super().__getitem__(index)
        sample["prev_output_tokens"] = self.task.add_noise(sample["prev_output_tokens"], self.epoch, index)
        return sample


@TASKS.register("gigaword", GigawordConfig)
class GigawordTask(Task):
    metric_name = "rougeL_f1"
    passthrough_keys = ("target_str",)

    def __init__(self, cfg: GigawordConfig, tokenizer=None):
        super().__init__(cfg, tokenizer)
        if not 0.0 <= cfg.noise_ratio <= 1.0:
            raise ValueError(f"--noise-ratio must be within [0, 1], got {cfg.noise_ratio}")
        self._valid_generator: SequenceGenerator | None = None

    # ------------------------------------------------------------------ data
    def dataset(self, split: str, epoch: int = 1) -> SummaryDataset:
        path = parse_data_paths(self.cfg.data, split, epoch)
        return SummaryDataset(self, TSVFile(path, self.cfg.selected_cols), split, epoch)

    def build_sample(self, row: list[str], split: str, index: int) -> dict[str, Any]:
        """One article/summary pair, noise-free (``SummaryDataset`` adds the noise: it knows the epoch)."""
        if len(row) < 2:
            raise ValueError(f"expected 2 columns (article, summary) after --selected-cols, got {len(row)}")
        article, summary = row[:2]
        source_text = pre_caption(article, self.cfg.max_src_length).replace("<unk>", "unk")
        target_text = pre_caption(summary, self.cfg.max_tgt_length).replace("<unk>", "unk")
        if split == "train" and not target_text:
            raise ValueError("empty summary")
        source = self.encode_text(PROMPT.format(source_text), length=self.cfg.max_src_length, bos=True, eos=True)
        target = self.encode_text(target_text)  # no leading space, unlike every other OFA task
        return {
            "id": index,
            "source": source,
            "target": torch.cat([target, torch.tensor([self.eos])]),
            "prev_output_tokens": torch.cat([torch.tensor([self.bos]), target]),
            "target_str": summary.lower(),
        }

    def noise_generator(self, epoch: int, index: int) -> torch.Generator:
        """A private RNG for row ``index`` of ``epoch``: the same triple always gives the same draws."""
        entropy = [self.cfg.seed % 2**64, epoch, index]
        high, low = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed((int(high) << 32 | int(low)) & (2**63 - 1))

    def add_noise(self, prev_output_tokens: Tensor, epoch: int, index: int) -> Tensor:
        """Replace each token after the leading bos with probability ``noise_ratio`` by a random text/mask id."""
        p = self.cfg.noise_ratio
        if p <= 0:
            return prev_output_tokens
        generator = self.noise_generator(epoch, index)
        body = prev_output_tokens[1:].clone()
        hit = torch.rand(body.size(0), generator=generator) < p
        high = len(self.tokenizer) - self.cfg.code_dict_size - self.cfg.num_bins  # first <code_0> id
        body[hit] = torch.randint(FIRST_NOISE_ID, high, (int(hit.sum()),), generator=generator)
        return torch.cat([prev_output_tokens[:1], body])

    # ------------------------------------------------------------------ evaluation
    def eval_enabled(self) -> bool:
        return self.cfg.eval_rouge

    def summarize(self, model, sample: dict, generator: SequenceGenerator | None = None, replace_unk: bool = False):
        """Best beam hypothesis of every row, post-processed for ROUGE."""
        model.eval()
        generator = generator or self.build_generator()
        hypos = generator.generate(model, sample)
        texts = [self.tokenizer.decode(h[0]["tokens"], split_specials=False) for h in hypos]
        return [postprocess_hypothesis(text, replace_unk) for text in texts]

    def eval_step(self, model, sample: dict, generator=None, **options) -> list[dict]:
        """``{"hyp", "ref"}`` per row as OFA's ``eval_gigaword`` writes them; score = ROUGE-L F1 x100."""
        hyps = self.summarize(model, sample, generator)
        refs = sample["target_str"]
        pairs = rouge_pair_scores(hyps, refs)
        return [
            {"hyp": hyp, "ref": ref, "score": 100.0 * scores["rougeL_f1"]}
            for hyp, ref, scores in zip(hyps, refs, pairs, strict=True)
        ]

    def eval_metrics(self, predictions: list[dict]) -> dict[str, float]:
        """Mean ROUGE-1/2/L F1 and recall (x100) over all pairs, plus ``count``."""
        means = rouge_scores([p["hyp"] for p in predictions], [p["ref"] for p in predictions])
        return {**{key: round(100.0 * value, 4) for key, value in means.items()}, "count": len(predictions)}

    def prediction_records(self, predictions: list[dict]) -> list[dict]:
        return [{"hyp": p["hyp"], "ref": p["ref"]} for p in predictions]

    # ------------------------------------------------------------------ validation during training
    def valid_step(self, model, criterion, sample: dict) -> tuple[Tensor, int, dict]:
        """The criterion's loss; with ``--eval-rouge`` also summed per-pair ROUGE (x100) and ``_rouge_cnt``."""
        with torch.no_grad():
            loss, sample_size, log = criterion(model, sample)
            if self.cfg.eval_rouge:
                if self._valid_generator is None:
                    self._valid_generator = self.build_generator()
                hyps = self.summarize(getattr(model, "module", model), sample, self._valid_generator, replace_unk=True)
                refs = list(sample["target_str"])
                if self.cfg.eval_print_samples and hyps:
                    logger.info("example hypothesis: %s", hyps[0])
                    logger.info("example reference: %s", refs[0])
                pairs = rouge_pair_scores(hyps, refs)
                log.update({f"_{key}_sum": 100.0 * sum(p[key] for p in pairs) for key in METRICS})
                log["_rouge_cnt"] = len(hyps)
        return loss, sample_size, log

    def reduce_metrics(self, logs: list[dict]) -> dict[str, float]:
        """``rouge{1,2,L}_{f1,recall}`` = summed per-pair values / ``_rouge_cnt`` (OFA's derived metrics)."""
        count = sum(float(lg.get("_rouge_cnt", 0)) for lg in logs)
        if not count:
            return {}
        return {key: round(sum(float(lg.get(f"_{key}_sum", 0)) for lg in logs) / count, 4) for key in METRICS}
