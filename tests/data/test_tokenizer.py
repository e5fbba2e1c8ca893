"""Tests for data/tokenizer.py: OFA's GPT-2 BPE + fairseq dictionary + <mask>/<code_i>/<bin_i> ids."""

import re
from pathlib import Path

import pytest
import tokenizers
import torch

from data.tokenizer import Dictionary, OFATokenizer, train_tokenizer_json

SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()
BPE_DIR = SHARED / "ofa_bpe"
GOLDEN = SHARED / "golden" / "golden_small.pt"

ROUND_TRIP_TEXTS = [
    " what does the image describe?",
    "Hello, World!",
    "  multiple   spaces  between\twords ",
    "line one\nline two\n\n  indented\r\n",
    "naïve café – “curly quotes” and ½ × 3",
    "日本語のテキストと中文",
    "emoji 🐱‍👤 and 👍🏽 and 🇫🇷",
    "it's we'll they've I'M 123 4567.89",
    "",
    " ",
    "<bin_12> looks like a special but is text",
]


@pytest.fixture(scope="module")
def tok() -> OFATokenizer:
    if not BPE_DIR.is_dir():
        pytest.skip(f"OFA BPE files not found at {BPE_DIR} (copy OFA's utils/BPE there)")
    return OFATokenizer.from_bpe_dir(BPE_DIR)


@pytest.fixture(scope="module")
def golden() -> dict:
    if not GOLDEN.is_file():
        pytest.skip(f"golden fixture not found at {GOLDEN}")
    return torch.load(GOLDEN, weights_only=False)


def _padded(ids: list[int], width: int, pad: int) -> list[int]:
    return ids + [pad] * (width - len(ids))


def test_golden_prompt_ids(tok: OFATokenizer, golden: dict) -> None:
    prompt = golden["meta"]["prompt"]
    assert " ".join(tok.codec.encode(prompt)) == golden["meta"]["bpe_src"][0] == "644 857 262 2939 6901 30"
    assert tok.encode(prompt).tolist() == [99, 473, 5, 2274, 6190, 116]
    src = tok.encode(prompt, add_bos=True, add_eos=True)
    assert src.dtype == torch.long
    for row in golden["inputs"]["src_tokens"]:
        assert src.tolist() == row.tolist() == [0, 99, 473, 5, 2274, 6190, 116, 2]


def test_golden_caption_ids(tok: OFATokenizer, golden: dict) -> None:
    meta, inputs = golden["meta"], golden["inputs"]
    width = inputs["target"].shape[1]
    for i, caption in enumerate(meta["captions"]):
        # Captions are encoded with a leading space, as OFA's caption dataset does.
        assert " ".join(tok.codec.encode(" " + caption)) == meta["bpe_tgt"][i]
        ids = tok.encode(" " + caption).tolist()
        assert inputs["prev_output_tokens"][i].tolist() == _padded([tok.bos, *ids], width, tok.pad)
        assert inputs["target"][i].tolist() == _padded([*ids, tok.eos], width, tok.pad)
    assert meta["bpe_tgt"][1] == "734 49807 11875"


def test_golden_generation_text(tok: OFATokenizer, golden: dict) -> None:
    for setting in golden["outputs"]["generation"].values():
        for hypos in setting["hypos"]:
            # Hypotheses end with eos and carry OFA's BPE-decoded text, leading space included.
            assert tok.decode(hypos["tokens"][0]) == hypos["text_top1"]


def test_golden_dictionary_size_and_specials(tok: OFATokenizer, golden: dict) -> None:
    meta = golden["meta"]
    assert len(tok) == meta["dictionary_size"] == 59457
    assert (tok.bos, tok.pad, tok.eos, tok.unk) == (meta["bos"], meta["pad"], meta["eos"], meta["unk"])


def test_vocabulary_layout(tok: OFATokenizer) -> None:
    assert len(tok) == 59457
    assert (tok.bos, tok.pad, tok.eos, tok.unk, tok.mask) == (0, 1, 2, 3, 50264)
    symbol = tok.dictionary.symbol
    assert [symbol(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert symbol(4) == "13"  # first dict.txt line
    assert symbol(50263) == "madeupword0002"
    assert (tok.code_token(0), tok.code_token(8191)) == (50265, 58456)
    assert (tok.bin_token(0), tok.bin_token(999)) == (58457, 59456)
    assert (symbol(50265), symbol(58456), symbol(58457), symbol(59456)) == (
        "<code_0>",
        "<code_8191>",
        "<bin_0>",
        "<bin_999>",
    )
    assert tok.token_to_bin(tok.bin_token(123)) == 123
    assert tok.token_to_code(tok.code_token(4567)) == 4567
    for bad in (
        lambda: tok.bin_token(1000),
        lambda: tok.token_to_bin(58456),
        lambda: tok.token_to_code(58457),
    ):
        with pytest.raises(ValueError, match="outside"):
            bad()


def test_configurable_code_and_bin_counts() -> None:
    if not BPE_DIR.is_dir():
        pytest.skip(f"OFA BPE files not found at {BPE_DIR}")
    small = OFATokenizer.from_bpe_dir(BPE_DIR, code_dict_size=16, num_bins=10)
    assert len(small) == 50265 + 16 + 10
    assert (small.mask, small.code_token(0), small.bin_token(0), small.bin_token(9)) == (
        50264,
        50265,
        50281,
        50290,
    )


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_round_trip(tok: OFATokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_gpt2_ids_match_tokenizers_library(tok: OFATokenizer) -> None:
    # An independent GPT-2 byte-level BPE (the one HF's GPT2TokenizerFast uses) must give the same ids.
    model = tokenizers.models.BPE.from_file(str(BPE_DIR / "encoder.json"), str(BPE_DIR / "vocab.bpe"))
    reference = tokenizers.Tokenizer(model)
    reference.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    for text in ROUND_TRIP_TEXTS:
        expected = [str(i) for i in reference.encode(text, add_special_tokens=False).ids]
        assert tok.codec.encode(text) == expected, text


def test_whitespace_is_significant(tok: OFATokenizer) -> None:
    assert tok.encode(" cat").tolist() != tok.encode("cat").tolist()
    assert tok.decode(tok.encode(" cat")) == " cat"


def test_literal_specials_decode_split_on_whitespace(tok: OFATokenizer) -> None:
    boxes = tok.encode("<bin_1> <bin_2>", use_bpe=False)
    assert boxes.tolist() == [58458, 58459]
    assert tok.decode(boxes) == "<bin_1> <bin_2>"
    assert tok.decode(boxes).split() == ["<bin_1>", "<bin_2>"]
    # The original OFA decode concatenates literals with no separator.
    assert tok.decode(boxes, split_specials=False) == "<bin_1><bin_2>"
    mixed = torch.cat([tok.encode(" a dog"), boxes, tok.encode("<code_7> <mask> <unk>", use_bpe=False)])
    mixed = torch.cat([mixed, tok.encode("cat"), tok.encode(" sat")])
    assert tok.decode(mixed) == " a dog <bin_1> <bin_2> <code_7> <mask> <unk> cat sat"
    assert tok.decode(mixed, split_specials=False) == " a dog<bin_1><bin_2><code_7><mask><unk>cat sat"


def test_decode_drops_bos_eos_pad_and_takes_lists(tok: OFATokenizer) -> None:
    ids = tok.encode(" two striped cats", add_bos=True, add_eos=True).tolist() + [tok.pad] * 3
    assert tok.decode(ids) == " two striped cats"
    assert tok.decode(torch.tensor(ids)) == " two striped cats"
    with pytest.raises(ValueError, match="one sequence"):
        tok.decode(torch.tensor([ids, ids]))


def test_encode_without_bpe_looks_up_symbols(tok: OFATokenizer) -> None:
    ids = tok.encode("  <bin_12>\t<bin_40>\n<code_3> <mask> 262 nonsense ", use_bpe=False).tolist()
    assert ids == [tok.bin_token(12), tok.bin_token(40), tok.code_token(3), tok.mask, 5, tok.unk]


def test_truncation_happens_before_bos_and_eos(tok: OFATokenizer) -> None:
    prompt = " what does the image describe?"
    assert tok.encode(prompt, length=3).tolist() == [99, 473, 5]
    assert tok.encode(prompt, length=3, add_bos=True, add_eos=True).tolist() == [0, 99, 473, 5, 2]
    assert tok.encode(prompt, length=100).tolist() == tok.encode(prompt).tolist()
    assert tok.encode("", add_bos=True, add_eos=True).tolist() == [0, 2]


def test_missing_bpe_dir_error_names_files_and_source(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no_bpe_here"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing_dir))) as info:
        OFATokenizer.from_bpe_dir(missing_dir)
    message = str(info.value)
    for needed in ("encoder.json", "vocab.bpe", "dict.txt", "utils/BPE/", "--bpe-dir"):
        assert needed in message
    assert "https://github.com/OFA-Sys/OFA/tree/main/utils/BPE" in message


def test_one_missing_bpe_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "encoder.json").write_text("{}")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    with pytest.raises(FileNotFoundError, match=r"lacks dict\.txt"):
        OFATokenizer.from_bpe_dir(tmp_path)


def test_is_beginning_of_word(tok: OFATokenizer) -> None:
    with_space, without_space = tok.encode(" the").item(), tok.encode("the").item()
    assert tok.is_beginning_of_word(with_space)
    assert not tok.is_beginning_of_word(without_space)
    assert all(tok.is_beginning_of_word(i) for i in range(4))
    assert tok.is_beginning_of_word(tok.dictionary.index("madeupword0000"))
    # OFA's BPE decodes these to themselves (no leading space), so BART masking treats them as word pieces.
    for index in (tok.mask, tok.code_token(0), tok.bin_token(0)):
        assert not tok.is_beginning_of_word(index)
    mask = tok.word_start_mask()
    assert mask.shape == (len(tok),) and mask.dtype == torch.bool
    assert mask[with_space] and not mask[without_space]


def test_dictionary_file_format(tmp_path: Path) -> None:
    path = tmp_path / "dict.txt"
    path.write_text("hello 5\nworld 3\nhello 1 #fairseq:overwrite\n", encoding="utf-8")
    d = Dictionary.load(path)
    assert len(d) == 7 and d.nspecial == 4
    assert (d.index("world"), d.index("hello"), d.index("unseen")) == (5, 6, d.unk)
    assert d.symbol(4) == "hello" and d.counts[6] == 1
    path.write_text("hello 5\nhello 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate symbol 'hello'"):
        Dictionary.load(path)
    path.write_text("no_count_here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected '<symbol> <count>"):
        Dictionary.load(path)
    with pytest.raises(IndexError):
        d.symbol(len(d))


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    lines = [
        "a red square and a green circle on a colourful background",
        "two striped cats sleeping on a sofa",
        "what does the image describe? a dog runs in the park",
        "café crème, naïve façade — 東京 🐱",
    ]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines * 20) + "\n", encoding="utf-8")
    return path


def test_own_corpus_tokenizer_layout_and_round_trip(tmp_path: Path, corpus: Path) -> None:
    json_path = train_tokenizer_json([corpus], tmp_path / "tok" / "tokenizer.json", vocab_size=300)
    trained_size = tokenizers.Tokenizer.from_file(str(json_path)).get_vocab_size()
    tok = OFATokenizer.from_tokenizer_json(json_path, code_dict_size=32, num_bins=10)
    # The four trained specials map onto fairseq's ids instead of taking new ones.
    assert len(tok) == trained_size + 1 + 32 + 10
    assert (tok.bos, tok.pad, tok.eos, tok.unk) == (0, 1, 2, 3)
    assert tok.mask == trained_size and tok.code_token(0) == trained_size + 1
    assert tok.bin_token(9) == len(tok) - 1
    for text in [" two striped cats", "a dog\n runs  fast", "naïve 東京 🐱 unseen words ✓", ""]:
        assert tok.decode(tok.encode(text)) == text
    boxes = tok.encode(" a cat", add_eos=True).tolist() + [tok.bin_token(3), tok.bin_token(7)]
    assert tok.decode(boxes) == " a cat <bin_3> <bin_7>"
    assert tok.encode("<unk>", use_bpe=False).tolist() == [tok.unk]


def test_own_corpus_trained_mask_and_bins_map_to_reserved_ids(tmp_path: Path, corpus: Path) -> None:
    model = tokenizers.Tokenizer(tokenizers.models.BPE())
    model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = tokenizers.decoders.ByteLevel()
    specials = ["<pad>", "<mask>", "<s>", "</s>", "<unk>", "<bin_1>"]  # other order than fairseq's
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=280,
        special_tokens=specials,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    model.train([str(corpus)], trainer)
    model.save(str(tmp_path / "tokenizer.json"))
    tok = OFATokenizer.from_tokenizer_json(tmp_path / "tokenizer.json", code_dict_size=4, num_bins=4)
    assert len(tok) == model.get_vocab_size() - len(specials) + 4 + 1 + 4 + 4
    ids = tok.encode(" a<mask> cat<bin_1></s>").tolist()
    assert tok.mask in ids and tok.bin_token(1) in ids and ids[-1] == tok.eos
    assert tok.decode(tok.encode(" two striped cats")) == " two striped cats"


def test_own_corpus_errors(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer file"):
        OFATokenizer.from_tokenizer_json(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="training files not found"):
        train_tokenizer_json([tmp_path / "nope.txt"], tmp_path / "t.json", vocab_size=300)
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer_json([corpus], tmp_path / "t.json", vocab_size=100)
