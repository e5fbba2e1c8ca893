"""GLUE tasks against values written by hand from spec §4.5: prompts, targets, label words, constraint masks,
metrics, and a train -> evaluate run for CoLA (mcc) and MNLI (three answers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import evaluate
import tasks.glue  # noqa: F401  (registers the seven names)
import train
from data.tokenizer import OFATokenizer
from tasks.base import TASKS

NO, YES, MAYBE, POSITIVE, NEGATIVE = 117, 4420, 2085, 1313, 2430  # " no", " yes", ... in OFA's dict
BOS, PAD, EOS = 0, 1, 2

# subset -> (--selected-cols, a TSV row in the layout those columns select from, prompt written from the spec
#            template by hand, answer word)
CASES = {
    "cola": ("1,2", ["gj04", "  The Sailors   ROWED the boat. ", "1"],
             ' is the text " the sailors rowed the boat. " grammatically correct?', "yes"),
    "mnli": ("0,1,2", ["Conceptually cream skimming", "Product and geography are what make it work.", "0"],
             ' can text1 " conceptually cream skimming " imply text2 " product and geography are what make it'
             ' work. "?', "maybe"),
    "mrpc": ("0,1,2", ["He said  HELLO.", "He greeted them.", "1"],
             ' does text1 " he said hello. " and text2 " he greeted them. " have the same semantics?', "yes"),
    "qnli": ("1,2,3", ["17", "What is the Capital?", "Paris is the capital.", "not_entailment"],
             ' does " paris is the capital. " contain the answer to question " what is the capital? "?', "no"),
    "qqp": ("3,4,5", ["9", "101", "102", "How do I learn Python?", "What is Python?", "0"],
            ' is question " how do i learn python? " and question " what is python? " equivalent?', "no"),
    "rte": ("1,2,3", ["3", "Dana Reeve died.", "Christopher Reeve had an accident.", "entailment"],
            ' can text1 " dana reeve died. " imply text2 " christopher reeve had an accident. "?', "yes"),
    "sst2": ("0,1", ["it 's a charming and often affecting journey . ", "0"],
             ' is the sentiment of text " it \'s a charming and often affecting journey . " positive or negative?',
             "negative"),
}  # fmt: skip
ANSWER_IDS = {"no": NO, "yes": YES, "maybe": MAYBE, "positive": POSITIVE, "negative": NEGATIVE}
FIRST_TOKENS = {"mnli": {MAYBE, YES, NO}, "sst2": {POSITIVE, NEGATIVE}}


@pytest.fixture(scope="module")
def tokenizer(bpe_dir):
    return OFATokenizer.from_bpe_dir(bpe_dir)


def make_task(name: str, tokenizer, **values):
    entry = TASKS.get(name)
    return entry.cls(entry.config(**values), tokenizer)


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_answer_words_are_the_single_tokens_assumed(tokenizer):
    for word, token in ANSWER_IDS.items():
        assert tokenizer.encode(" " + word).tolist() == [token]


@pytest.mark.parametrize("name", sorted(CASES))
def test_row_to_prompt_and_target(name, tokenizer, tmp_path):
    cols, row, prompt, answer = CASES[name]
    data = write_tsv(tmp_path / f"{name}.tsv", [row])
    task = make_task(name, tokenizer, data=str(data), selected_cols=cols, prompt_type="src", max_src_length=512)
    sample = task.dataset("valid")[0]
    source = [BOS, *tokenizer.encode(prompt).tolist(), EOS]
    assert sample["source"].tolist() == source
    assert sample["prev_output_tokens"].tolist() == source  # src: the whole source, eos included
    assert sample["target"].tolist() == [PAD] * (len(source) - 1) + [ANSWER_IDS[answer]]  # one token, no eos
    assert sample["ref"] == answer and sample["id"] == 0 and "patch_image" not in sample


@pytest.mark.parametrize("prompt_type", ["none", "prev_output"])
def test_other_prompt_types(prompt_type, tokenizer):
    task = make_task("sst2", tokenizer, prompt_type=prompt_type)
    sample = task.build_sample(["A fine film", "1"], "train", 4)
    source = [BOS, *tokenizer.encode(' is the sentiment of text " a fine film " positive or negative?').tolist(), EOS]
    prev = [BOS] if prompt_type == "none" else source[:-1]
    assert sample["source"].tolist() == source and sample["prev_output_tokens"].tolist() == prev
    assert sample["target"].tolist() == [PAD] * (len(prev) - 1) + [POSITIVE]


def test_sentences_are_cut_to_max_src_length_words(tokenizer):
    task = make_task("mrpc", tokenizer, max_src_length=2)
    sample = task.build_sample(["One two THREE four", "five\tsix  seven", "0"], "train", 0)
    prompt = ' does text1 " one two " and text2 " five six " have the same semantics?'
    assert sample["source"].tolist() == [BOS, *tokenizer.encode(prompt).tolist(), EOS]


@pytest.mark.parametrize(
    ("name", "label", "word"),
    [("mnli", "0", "maybe"), ("mnli", "1", "yes"), ("mnli", "2", "no"), ("qnli", "0", "no"), ("qnli", "1", "yes"),
     ("qnli", "entailment", "yes"), ("qnli", "not_entailment", "no"), ("rte", "not_entailment", "no"),
     ("cola", "0", "no"), ("qqp", "1", "yes"), ("sst2", "1", "positive")],
)  # fmt: skip
def test_label_words(name, label, word, tokenizer):
    task = make_task(name, tokenizer)
    row = ["some text"] * len(task.spec.columns) + [label]
    assert task.build_sample(row, "train", 0)["ref"] == word


@pytest.mark.parametrize(("name", "label"), [("rte", "1"), ("cola", "entailment"), ("mnli", "3"), ("sst2", " 1")])
def test_unknown_labels_are_errors(name, label, tokenizer):
    task = make_task(name, tokenizer)
    with pytest.raises(ValueError, match="labels are"):
        task.build_sample(["text"] * len(task.spec.columns) + [label], "train", 0)


def test_wrong_column_count_names_the_script_columns(tokenizer):
    with pytest.raises(ValueError, match="3,4,5"):
        make_task("qqp", tokenizer).build_sample(["a", "b", "c", "1"], "train", 0)


@pytest.mark.parametrize("name", ["cola", "mnli", "sst2"])
def test_constraint_mask_only_on_each_last_row(name, tokenizer):
    task = make_task(name, tokenizer, prompt_type="src")
    ncols = len(task.spec.columns)
    rows = [["a b c"] * ncols + ["1"], ["a much longer text here"] * ncols + ["1"]]
    samples = [task.build_sample(r, "valid", i) for i, r in enumerate(rows)]
    batch = task.collate(samples)
    masks = batch["constraint_masks"]
    width = batch["target"].size(1)
    assert masks.shape == (2, width, len(tokenizer)) and masks.dtype == torch.bool
    expected = FIRST_TOKENS.get(name, {NO, YES})
    for i, sample in enumerate(samples):
        n = len(sample["prev_output_tokens"])
        assert not masks[i, : n - 1].any()
        assert set(masks[i, n - 1].nonzero().squeeze(1).tolist()) == expected
        assert masks[i, n:].all()  # padding rows are True, as OFA's collater pads masks with 1
    assert batch["ntokens"] == 2 and "patch_images" not in batch["net_input"]
    assert set(batch["target"].unique().tolist()) < {PAD} | expected  # pad and the answer: no eos
    assert batch["ref"] == [{"sst2": "positive"}.get(name, "yes")] * 2


def test_configs_defaults_and_metric_names():
    assert set(CASES) == {"cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2"} <= set(TASKS.names())
    defaults = {name: TASKS.get(name).config() for name in CASES}
    assert json.loads(defaults["mnli"].ans2label_dict) == {"maybe": 0, "yes": 1, "no": 2}
    assert json.loads(defaults["sst2"].ans2label_dict) == {"negative": 0, "positive": 1}
    for name in ("cola", "mrpc", "qnli", "qqp", "rte"):
        assert json.loads(defaults[name].ans2label_dict) == {"no": 0, "yes": 1}
    assert all(cfg.prompt_type == "none" for cfg in defaults.values())
    metric = {name: TASKS.get(name).cls.metric_name for name in CASES}
    assert metric == {"cola": "mcc", "mnli": "acc", "mrpc": "acc", "qnli": "acc", "qqp": "acc", "rte": "acc",
                      "sst2": "acc"}  # fmt: skip


def test_bad_answer_dicts_are_errors(tokenizer):
    with pytest.raises(ValueError, match="one BPE token"):
        make_task("cola", tokenizer, ans2label_dict='{"no": 0, "yes": 1, "grammatical": 2}')
    with pytest.raises(ValueError, match="lacks"):
        make_task("mnli", tokenizer, ans2label_dict='{"no": 0, "yes": 1}')
    with pytest.raises(ValueError, match="prompt-type"):
        make_task("rte", tokenizer, prompt_type="question")


class FixedLogits(torch.nn.Module):
    """A stand-in model whose logits favour a forbidden token everywhere, and at each sample's last
    position favour the answer token given for that sample over the other allowed ones."""

    def __init__(self, picks: list[int], vocab: int):
        super().__init__()
        self.picks, self.vocab = picks, vocab

    def forward(self, src_tokens, src_lengths, prev_output_tokens, **_):
        bsz, width = prev_output_tokens.shape
        logits = torch.zeros(bsz, width, self.vocab)
        logits[:, :, 500] = 100.0  # outside the trie: must never be chosen
        last = prev_output_tokens.ne(PAD).sum(1) - 1
        for i, token in enumerate(self.picks):
            logits[i, last[i], token] = 10.0
            if last[i] < width - 1:  # a padded position, which must be ignored
                logits[i, width - 1, NO if token == YES else YES] += 20.0
        return logits, {}


def cola_batch(task, labels: list[str]) -> dict:
    texts = ["short", "a somewhat longer sentence", "mid length one", "x"]
    return task.collate([task.build_sample([texts[i % 4], lab], "valid", i) for i, lab in enumerate(labels)])


def test_eval_step_takes_the_masked_argmax_at_the_last_real_position(tokenizer):
    task = make_task("cola", tokenizer, prompt_type="src")
    batch = cola_batch(task, ["1", "0", "0", "1"])
    picks = [YES, YES, NO, NO]
    preds = task.eval_step(FixedLogits(picks, len(tokenizer)), batch)
    assert [p["hyp"] for p in preds] == ["yes", "yes", "no", "no"]
    assert [p["ref"] for p in preds] == ["yes", "no", "no", "yes"]
    assert [p["uniq_id"] for p in preds] == [0, 1, 2, 3] and [p["score"] for p in preds] == [1.0, 0.0, 1.0, 0.0]
    # TP=1 FP=1 TN=1 FN=1: acc 0.5, mcc 0
    assert task.eval_metrics(preds) == {"acc": 0.5, "mcc": 0.0, "count": 4}
    assert task.prediction_records(preds)[0] == {"uniq_id": 0, "hyp": "yes", "ref": "yes"}


def test_validation_sums_counts_over_batches_before_mcc(tokenizer):
    task = make_task("cola", tokenizer, prompt_type="src")

    def criterion(model, sample):
        return torch.tensor(0.0), 1, {}

    logs = []
    # batch 1: TP TP FP TN; batch 2: TP TN TN FN -> TP=3 FP=1 TN=3 FN=1
    for labels, picks in ((["1", "1", "0", "0"], [YES, YES, YES, NO]), (["1", "0", "0", "1"], [YES, NO, NO, NO])):
        _, _, log = task.valid_step(FixedLogits(picks, len(tokenizer)), criterion, cola_batch(task, labels))
        logs.append(log)
    assert logs[0]["_TP"] == 2 and logs[0]["_FP"] == 1 and logs[0]["_TN"] == 1 and logs[0]["_FN"] == 0
    summed = {key: sum(lg[key] for lg in logs) for key in logs[0]}
    # mcc = (3*3 - 1*1) / sqrt(4*4*4*4) = 0.5; acc = 6/8
    assert task.reduce_metrics([summed]) == {"acc": 0.75, "mcc": 0.5}


def test_f1_for_mrpc_and_accuracy_only_for_mnli(tokenizer):
    mrpc = make_task("mrpc", tokenizer)
    preds = [{"hyp": h, "ref": r, "score": float(h == r)} for h, r in
             [("yes", "yes"), ("yes", "yes"), ("yes", "no"), ("no", "yes"), ("no", "no")]]  # fmt: skip
    assert mrpc.eval_metrics(preds) == {"acc": 0.6, "F1": round(4 / 6, 3), "count": 5}
    mnli = make_task("mnli", tokenizer)
    preds = [{"hyp": "maybe", "ref": "maybe", "score": 1.0}, {"hyp": "no", "ref": "yes", "score": 0.0}]
    assert mnli.eval_metrics(preds) == {"acc": 0.5, "count": 2}
    # a degenerate CoLA run (every answer "yes") has an undefined MCC, reported as 0
    cola = make_task("cola", tokenizer)
    preds = [{"hyp": "yes", "ref": r, "score": float(r == "yes")} for r in ("yes", "no", "yes")]
    assert cola.eval_metrics(preds) == {"acc": round(2 / 3, 4), "mcc": 0.0, "count": 3}


WORDS = ["the", "cat", "sat", "on", "a", "mat", "Dogs", "RUN", "fast", "slowly", "green", "ideas", "sleep"]


def glue_rows(name: str, count: int, seed: int) -> list[list[str]]:
    """Rows in the column layout of OFA's GLUE TSVs (CoLA: id, sentence, label; MNLI: s1, s2, label)."""
    gen = torch.Generator().manual_seed(seed)

    def text() -> str:
        picks = torch.randint(len(WORDS), (int(torch.randint(2, 7, (1,), generator=gen)),), generator=gen)
        return " ".join(WORDS[i] for i in picks.tolist())

    labels = {"cola": "01", "mnli": "012"}[name]
    rows = []
    for i in range(count):
        label = labels[i % len(labels)]
        rows.append([f"id{i}", text(), label] if name == "cola" else [text(), text(), label])
    return rows


@pytest.mark.parametrize(("name", "cols", "metric"), [("cola", "1,2", "mcc"), ("mnli", "0,1,2", "acc")])
def test_train_then_evaluate(name, cols, metric, tmp_path, bpe_dir):
    train_tsv = write_tsv(tmp_path / "train.tsv", glue_rows(name, 8, 0))
    valid_tsv = write_tsv(tmp_path / "valid.tsv", glue_rows(name, 4, 1))
    save = tmp_path / "ckpt"
    argv = [f"{train_tsv},{valid_tsv}", "--task", name, "--arch", "ofa_test", "--bpe-dir", str(bpe_dir),
            "--selected-cols", cols, "--prompt-type", "src", "--batch-size", "4", "--max-update", "2", "--lr", "1e-4",
            "--save-dir", str(save), "--best-checkpoint-metric", metric,
            "--maximize-best-checkpoint-metric"]  # fmt: skip
    assert train.main(argv) == 0
    log = [json.loads(x) for x in (save / "train_log.jsonl").read_text().splitlines()]
    valid = [x for x in log if x["split"] == "valid"]
    assert valid and math.isfinite(valid[-1]["loss"]) and math.isfinite(valid[-1][metric])
    assert "acc" in valid[-1] and (save / "checkpoint_best.pt").exists()
    results = tmp_path / "results"
    assert evaluate.main([str(valid_tsv), "--path", str(save / "checkpoint_last.pt"), "--gen-subset", "test",
                          "--results-path", str(results), "--batch-size", "3"]) == 0  # fmt: skip
    metrics = json.loads((results / "test_metrics.json").read_text())
    assert math.isfinite(metrics[metric]) and math.isfinite(metrics["acc"]) and metrics["count"] == 4
    predictions = json.loads((results / "test_predict.json").read_text())
    answers = {"cola": {"no", "yes"}, "mnli": {"maybe", "yes", "no"}}[name]
    assert len(predictions) == 4 and all(set(p) == {"uniq_id", "hyp", "ref"} for p in predictions)
    assert all(p["hyp"] in answers and p["ref"] in answers for p in predictions)  # the trie guarantee
    assert sorted(p["uniq_id"] for p in predictions) == [0, 1, 2, 3]
