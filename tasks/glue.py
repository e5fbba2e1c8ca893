"""GLUE as single-token answer generation (OFA ``cola``, ``mnli``, ``mrpc``, ``qnli``, ``qqp``, ``rte``, ``sst2``;
spec §4.5, OFA's ``tasks/nlu_tasks/*`` and ``data/nlu_data/*``).

Text only: no image enters the batch. Each sentence is lower-cased, whitespace-normalised and cut to
``--max-src-length`` words, then put into the subset's English prompt (``SUBSETS``); the TSV label becomes an
answer word (``yes``/``no``/``maybe``, ``positive``/``negative``). The answer is one BPE token with no eos.
With ``--prompt-type src`` (every OFA script) the decoder reads the whole source (bos .. eos) and the answer is
predicted at its last position; ``prev_output`` drops the eos, ``none`` (the default) feeds bos only. The loss
sees that one position, restricted to the first tokens of the ``--ans2label-dict`` answers.

Evaluation is one forward pass: at the last non-pad decoder position the logits outside the answer tokens are
set to -inf and the argmax is decoded. Validation logs ``acc`` and, from yes/no counts, ``mcc`` (CoLA, the
scripts' ``--best-checkpoint-metric``) or ``F1`` (MRPC, QQP). Prediction rows are ``{"uniq_id", "hyp", "ref"}``:
OFA's ``eval_glue`` writes ``{"hyp", "ref"}``; ``uniq_id`` (the row's index in the TSV) is added here because
the GLUE TSVs carry no id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from data.tokenizer import OFATokenizer
from tasks.base import TASKS, Task, TaskConfig
from utils.metrics.classification import confusion_counts, f1_score, matthews_corrcoef
from utils.trie import Trie

PROMPT_TYPES = ("none", "src", "prev_output")
COUNT_KEYS = ("_TP", "_FP", "_TN", "_FN")  # OFA's log names for the yes/no confusion counts
YES_NO = {"0": "no", "1": "yes"}
ENTAILMENT = {"not_entailment": "no", "entailment": "yes"}
ONE, PAIR = ("sentence",), ("sentence1", "sentence2")
ANS2LABEL_HELP = "JSON {answer word: label}; the words form the answer trie"


@dataclass(frozen=True)
class GlueSubset:
    """One GLUE subset: its columns, prompt, label words and extra metric."""

    script_cols: str  # --selected-cols of OFA's run_scripts/glue/train_<subset>.sh
    columns: tuple[str, ...]  # the text columns, in --selected-cols order; the label follows them
    template: str  # the prompt; ``{0}``, ``{1}`` are the cleaned text columns
    labels: dict[str, str]  # TSV label -> answer word
    extra_metric: str | None = None  # "mcc" or "F1", from the yes/no confusion counts


# QNLI puts the sentence before the question in its prompt, and accepts both label spellings.
SUBSETS: dict[str, GlueSubset] = {
    "cola": GlueSubset("1,2", ONE, ' is the text " {0} " grammatically correct?', YES_NO, "mcc"),
    "mnli": GlueSubset("0,1,2", PAIR, ' can text1 " {0} " imply text2 " {1} "?', {"0": "maybe", "1": "yes", "2": "no"}),
    "mrpc": GlueSubset("0,1,2", PAIR, ' does text1 " {0} " and text2 " {1} " have the same semantics?', YES_NO, "F1"),
    "qnli": GlueSubset("1,2,3", ("question", "sentence"), ' does " {1} " contain the answer to question " {0} "?',
                       YES_NO | ENTAILMENT),
    "qqp": GlueSubset("3,4,5", ("question1", "question2"), ' is question " {0} " and question " {1} " equivalent?',
                      YES_NO, "F1"),
    "rte": GlueSubset("1,2,3", PAIR, ' can text1 " {0} " imply text2 " {1} "?', ENTAILMENT),
    "sst2": GlueSubset("0,1", ONE, ' is the sentiment of text " {0} " positive or negative?',
                       {"0": "negative", "1": "positive"}),
}  # fmt: skip


@dataclass
class GlueConfig(TaskConfig):
    ans2label_dict: str = field(default='{"no": 0, "yes": 1}', metadata={"help": ANS2LABEL_HELP})
    prompt_type: str = field(
        default="none", metadata={"help": "decoder prompt (OFA's scripts: src)", "choices": PROMPT_TYPES}
    )


@dataclass
class MnliConfig(GlueConfig):
    ans2label_dict: str = field(default='{"maybe": 0, "yes": 1, "no": 2}', metadata={"help": ANS2LABEL_HELP})


@dataclass
class Sst2Config(GlueConfig):
    ans2label_dict: str = field(default='{"negative": 0, "positive": 1}', metadata={"help": ANS2LABEL_HELP})


def clean_sentence(text: str, max_words: int) -> str:
    """OFA's GLUE text normalisation: lower case, single spaces, at most ``max_words`` words."""
    return " ".join(text.lower().strip().split()[:max_words])


class GlueTask(Task):
    """Shared by the seven subsets; a subclass names its ``subset`` and ``metric_name``."""

    subset = ""
    metric_name = "acc"
    passthrough_keys = ("ref",)

    def __init__(self, cfg: GlueConfig, tokenizer: OFATokenizer | None = None):
        super().__init__(cfg, tokenizer)
        self.spec = SUBSETS[self.subset]
        if cfg.prompt_type not in PROMPT_TYPES:
            raise ValueError(f"--prompt-type must be one of {PROMPT_TYPES}, got {cfg.prompt_type!r}")
        self.answers = self._parse_answers(cfg.ans2label_dict)
        self.answer_ids = {answer: self._single_token(answer) for answer in self.answers}
        missing = sorted(set(self.spec.labels.values()) - set(self.answers))
        if missing:
            raise ValueError(f"--ans2label-dict lacks the {self.subset} answer word(s) {missing}")
        self.trie = Trie.from_sequences([[i] for i in self.answer_ids.values()], bos=self.bos, eos=self.eos)
        self.label_tokens = torch.tensor(sorted(self.trie.get_next_layer([self.bos])))

    def _parse_answers(self, ans2label: str) -> list[str]:
        mapping = json.loads(ans2label)
        if not isinstance(mapping, dict) or not mapping:
            raise ValueError(f"--ans2label-dict must be a non-empty JSON object, got {ans2label!r}")
        return list(mapping)

    def _single_token(self, answer: str) -> int:
        ids = self.encode_text(" " + answer).tolist()
        if len(ids) != 1:  # OFA asserts this per sample; the answer is predicted at one position
            raise ValueError(f"GLUE answers must be one BPE token; {answer!r} encodes to {ids}")
        return ids[0]

    # ------------------------------------------------------------------ data
    def build_sample(self, row: list[str], split: str, index: int) -> dict[str, Any]:
        spec = self.spec
        if len(row) != len(spec.columns) + 1:
            names = ", ".join((*spec.columns, "label"))
            raise ValueError(
                f"{self.subset} expects {len(spec.columns) + 1} columns ({names}) after --selected-cols "
                f"(OFA's script uses {spec.script_cols}), got {len(row)}"
            )
        *texts, label = row
        if label not in spec.labels:
            raise ValueError(f"{self.subset} labels are {sorted(spec.labels)}, got {label!r}")
        answer = spec.labels[label]
        prompt = spec.template.format(*(clean_sentence(t, self.cfg.max_src_length) for t in texts))
        source = self.encode_text(prompt, bos=True, eos=True)
        prev = {"none": source[:1], "src": source, "prev_output": source[:-1]}[self.cfg.prompt_type].clone()
        target = torch.full_like(prev, self.pad)
        target[-1] = self.answer_ids[answer]  # one answer token at the last position, no eos
        return {"id": index, "source": source, "prev_output_tokens": prev, "target": target, "ref": answer}

    def constraint_masks(self, prev_lengths: list[int], width: int) -> Tensor:
        """(B, width, V) masks as OFA's collater builds them: in each sample only the last row is allowed
        anything (the answers' first tokens); rows past a sample's end are padding, filled with True."""
        masks = torch.ones(len(prev_lengths), width, len(self.tokenizer), dtype=torch.bool)
        for i, length in enumerate(prev_lengths):
            masks[i, :length] = False
            masks[i, length - 1, self.label_tokens] = True
        return masks

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().collate(samples)
        if batch and "target" in batch:
            lengths = [len(s["prev_output_tokens"]) for s in samples]
            batch["constraint_masks"] = self.constraint_masks(lengths, batch["target"].size(1))
        return batch

    # ------------------------------------------------------------------ evaluation
    def eval_enabled(self) -> bool:
        return True

    @torch.no_grad()
    def predict(self, model: nn.Module, sample: dict) -> list[str]:
        """The answer word at each sample's last decoder position, among the allowed first tokens."""
        model.eval()
        logits = model(**sample["net_input"])[0]
        last = sample["net_input"]["prev_output_tokens"].ne(self.pad).sum(1) - 1
        rows = torch.arange(logits.size(0), device=logits.device)
        allowed = sample["constraint_masks"][rows, last]
        best = logits[rows, last].masked_fill(~allowed, float("-inf")).argmax(-1)
        return [self.tokenizer.decode([token]).strip() for token in best.tolist()]

    def eval_step(self, model: nn.Module, sample: dict, generator: Any = None, **options: Any) -> list[dict]:
        hyps = self.predict(model, sample)
        return [
            {"uniq_id": uid, "hyp": hyp, "ref": ref, "score": float(hyp == ref)}
            for uid, hyp, ref in zip(sample["id"], hyps, sample["ref"], strict=True)
        ]

    def _metrics(self, correct: float, count: float, counts: tuple[float, ...]) -> dict[str, float]:
        """acc (4 decimals), plus mcc (4) or F1 (3 decimals), rounded as OFA logs them."""
        out = {"acc": round(correct / count, 4)}
        tp, fp, tn, fn = counts
        if self.spec.extra_metric == "mcc":
            out["mcc"] = round(matthews_corrcoef(tp, fp, tn, fn), 4)
        elif self.spec.extra_metric == "F1":
            out["F1"] = round(f1_score(tp, fp, fn), 3)
        return out

    def eval_metrics(self, predictions: list[dict]) -> dict[str, float]:
        if not predictions:
            return {self.metric_name: 0.0, "count": 0}
        counts = confusion_counts([p["hyp"] for p in predictions], [p["ref"] for p in predictions])
        correct = sum(p["score"] for p in predictions)
        return {**self._metrics(correct, len(predictions), counts), "count": len(predictions)}

    # ------------------------------------------------------------------ validation during training
    def valid_step(self, model: nn.Module, criterion: Callable, sample: dict) -> tuple[Tensor, int, dict]:
        with torch.no_grad():
            loss, sample_size, log = criterion(model, sample)
            preds = self.eval_step(getattr(model, "module", model), sample)
        log["_score_sum"] = float(sum(p["score"] for p in preds))
        log["_score_cnt"] = len(preds)
        if self.spec.extra_metric:
            counts = confusion_counts([p["hyp"] for p in preds], [p["ref"] for p in preds])
            log.update(zip(COUNT_KEYS, counts, strict=True))
        return loss, sample_size, log

    def reduce_metrics(self, logs: list[dict]) -> dict[str, float]:
        count = sum(float(lg.get("_score_cnt", 0)) for lg in logs)
        if not count:
            return {}
        correct = sum(float(lg.get("_score_sum", 0)) for lg in logs)
        counts = tuple(sum(float(lg.get(key, 0)) for lg in logs) for key in COUNT_KEYS)
        return self._metrics(correct, count, counts)


@TASKS.register("cola", GlueConfig)
class ColaTask(GlueTask):
    subset, metric_name = "cola", "mcc"


@TASKS.register("mnli", MnliConfig)
class MnliTask(GlueTask):
    subset = "mnli"


@TASKS.register("mrpc", GlueConfig)
class MrpcTask(GlueTask):
    subset = "mrpc"


@TASKS.register("qnli", GlueConfig)
class QnliTask(GlueTask):
    subset = "qnli"


@TASKS.register("qqp", GlueConfig)
class QqpTask(GlueTask):
    subset = "qqp"


@TASKS.register("rte", GlueConfig)
class RteTask(GlueTask):
    subset = "rte"


@TASKS.register("sst2", Sst2Config)
class Sst2Task(GlueTask):
    subset = "sst2"
