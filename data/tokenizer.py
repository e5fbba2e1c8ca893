"""OFA's text vocabulary: GPT-2 byte-level BPE + a fairseq dictionary + ``<mask>``/``<code_i>``/``<bin_i>``.

Reproduces what OFA does with ``--bpe-dir`` (spec section 2, ``OFATask.setup_task`` and
``OFADataset.encode_text``):

* GPT-2 byte-level BPE (``encoder.json`` + ``vocab.bpe``) turns text into GPT-2 ids; each id, written as a
  decimal string, is a symbol of the fairseq dictionary ``dict.txt`` (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2,
  ``<unk>`` 3, then the file's lines in order). OFA then appends ``<mask>``, ``code_dict_size`` image-code
  symbols and ``num_bins`` location symbols, so the English vocabulary has 59457 entries.
* Decoding keeps every symbol that starts with ``<`` as literal text (OFA's fork of fairseq's ``GPT2BPE``).
  The original concatenates those literals to the BPE text with no separator (``"<bin_1><bin_2>"``); here
  ``decode`` sets them off with single spaces by default so the result splits on whitespace, and
  ``decode(..., split_specials=False)`` gives the original bytes exactly.

The same id layout can be built from a ``tokenizers``-library ``tokenizer.json`` for one's own corpus.
"""

import functools
import itertools
import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, Self

import regex
import tokenizers
import torch

logger = logging.getLogger(__name__)

BPE_FILES = ("encoder.json", "vocab.bpe", "dict.txt")
BPE_SOURCE_URL = "https://github.com/OFA-Sys/OFA/tree/main/utils/BPE"
SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")
MASK_SYMBOL = "<mask>"
_OVERWRITE_FLAG = "#fairseq:overwrite"
_RESERVED = regex.compile(r"<(?:code|bin)_\d+>")
# GPT-2's pre-tokeniser: contractions, letter runs, digit runs, other runs, then whitespace. The
# ``\s+(?!\S)`` branch leaves the last space of a run to prefix the following word.
_GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class Dictionary:
    """fairseq's symbol table: four specials first, then symbols in insertion order."""

    def __init__(self) -> None:
        self.symbols: list[str] = []
        self.counts: list[int] = []
        self._indices: dict[str, int] = {}
        self.bos, self.pad, self.eos, self.unk = (self.add_symbol(symbol) for symbol in SPECIAL_SYMBOLS)
        self.nspecial = len(self.symbols)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._indices

    def index(self, symbol: str) -> int:
        """Index of ``symbol``; unknown symbols map to ``<unk>`` as in fairseq's ``encode_line``."""
        return self._indices.get(symbol, self.unk)

    def symbol(self, index: int) -> str:
        if not 0 <= index < len(self.symbols):
            raise IndexError(f"token id {index} is outside the dictionary (size {len(self.symbols)})")
        return self.symbols[index]

    def add_symbol(self, symbol: str, count: int = 1, overwrite: bool = False) -> int:
        """Append ``symbol`` (or add to its count if present, unless ``overwrite`` re-appends it)."""
        if symbol in self._indices and not overwrite:
            index = self._indices[symbol]
            self.counts[index] += count
            return index
        self._indices[symbol] = len(self.symbols)
        self.symbols.append(symbol)
        self.counts.append(count)
        return len(self.symbols) - 1

    def add_from_file(self, path: str | Path) -> None:
        """Append the ``"<symbol> <count> [#fairseq:overwrite]"`` lines of a fairseq ``dict.txt``."""
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        for line_no, line in enumerate(lines, start=1):
            fields = line.rstrip().rsplit(" ", 1)
            overwrite = len(fields) == 2 and fields[1] == _OVERWRITE_FLAG
            if overwrite:
                fields = fields[0].rsplit(" ", 1)
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise ValueError(f"{path}:{line_no}: expected '<symbol> <count> [flags]', got {line!r}")
            symbol, count = fields[0], int(fields[1])
            if symbol in self and not overwrite:
                # fairseq refuses silent duplicates; the flag is how a file asks for a second entry.
                raise ValueError(
                    f"{path}:{line_no}: duplicate symbol {symbol!r}; append {_OVERWRITE_FLAG} to re-add it"
                )
            self.add_symbol(symbol, count, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        dictionary = cls()
        dictionary.add_from_file(path)
        return dictionary


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (BPE merges work on these characters)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    # The other bytes (controls, space, NBSP, soft hyphen) move to code points from 256 on, so the
    # merge table never holds whitespace or control characters.
    for offset, byte in enumerate(b for b in range(256) if b not in table):
        table[byte] = chr(256 + offset)
    return table


class SubwordCodec(Protocol):
    """What ``OFATokenizer`` needs from a subword model: text <-> dictionary symbols."""

    def encode(self, text: str) -> list[str]:
        """Dictionary symbols of ``text`` (decimal subword ids, or a ``<...>`` special)."""

    def decode(self, symbols: Sequence[str]) -> bytes:
        """UTF-8 bytes of consecutive decimal-id symbols."""


class GPT2BPE:
    """GPT-2's byte-level BPE: regex pre-split, bytes -> characters, then lowest-rank merges first."""

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]]) -> None:
        self.encoder = encoder
        self.decoder = {index: token for token, index in encoder.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._byte_chars = bytes_to_unicode()
        self._char_bytes = {char: byte for byte, char in self._byte_chars.items()}
        # Words repeat a lot in captions and questions; merging is the slow part.
        self._merge = functools.lru_cache(maxsize=1 << 16)(self._merge_word)

    @classmethod
    def from_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> Self:
        encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
        lines = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")
        # First line is the "#version: 0.2" header; the file ends with a newline.
        merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
        return cls(encoder, merges)

    def _merge_word(self, word: str) -> tuple[str, ...]:
        parts = list(word)
        while len(parts) > 1:
            pairs = list(zip(parts, parts[1:], strict=False))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, math.inf))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):  # merge every non-overlapping occurrence, left to right
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)

    def encode(self, text: str) -> list[str]:
        symbols: list[str] = []
        for piece in _GPT2_SPLIT.findall(text):
            chars = "".join(self._byte_chars[byte] for byte in piece.encode("utf-8"))
            symbols.extend(str(self.encoder[token]) for token in self._merge(chars))
        return symbols

    def decode(self, symbols: Sequence[str]) -> bytes:
        return bytes(self._char_bytes[char] for symbol in symbols for char in self.decoder[int(symbol)])


class TokenizersCodec:
    """A ``tokenizers``-library model whose token ids are written as decimal dictionary symbols.

    Trained specials (``<unk>``, ``<mask>``, ...) are not given decimal symbols: ``aliases`` maps their
    ids to the reserved symbol so they land on OFA's fixed indices.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer, aliases: dict[int, str]) -> None:
        self.tokenizer = tokenizer
        self.aliases = aliases

    def encode(self, text: str) -> list[str]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.aliases.get(index, str(index)) for index in ids]

    def decode(self, symbols: Sequence[str]) -> bytes:
        ids = [int(symbol) for symbol in symbols]
        return self.tokenizer.decode(ids, skip_special_tokens=False).encode("utf-8")


def _is_literal(symbol: str) -> bool:
    # Anything that is not a subword id (``<bin_5>``, ``<mask>``, ``madeupword0000``) decodes as itself.
    return not symbol.isdigit()


def _missing_bpe_files_error(bpe_dir: Path, missing: Sequence[str]) -> FileNotFoundError:
    return FileNotFoundError(
        f"BPE directory {bpe_dir} lacks {', '.join(missing)}. OFA needs the files {', '.join(BPE_FILES)} "
        f"there: OFA publishes them in its repository under utils/BPE/ ({BPE_SOURCE_URL}); "
        "point --bpe-dir at the folder that holds them."
    )


def _join_pieces(pieces: Iterable[tuple[bool, bytes]], split_specials: bool) -> bytes:
    """Concatenate decoded runs and literal symbols, optionally putting a space around each literal."""
    out = bytearray()
    previous_literal = False
    for literal, chunk in pieces:
        touching = out and not out[-1:].isspace() and not chunk[:1].isspace()
        if split_specials and (literal or previous_literal) and touching:
            out += b" "
        out += chunk
        previous_literal = literal
    return bytes(out)


class OFATokenizer:
    """Text <-> OFA token ids, with the ``<mask>``, ``<code_i>`` and ``<bin_i>`` symbols OFA appends.

    ``dictionary`` must hold the four specials and the subword symbols; the constructor appends
    ``<mask>``, the codes and the bins to it, in that order, exactly as ``OFATask.setup_task`` does.
    """

    def __init__(
        self, dictionary: Dictionary, codec: SubwordCodec, code_dict_size: int = 8192, num_bins: int = 1000
    ) -> None:
        self.dictionary = dictionary
        self.codec = codec
        self.code_dict_size = code_dict_size
        self.num_bins = num_bins
        codes = (f"<code_{i}>" for i in range(code_dict_size))
        bins = (f"<bin_{i}>" for i in range(num_bins))
        for symbol in (MASK_SYMBOL, *codes, *bins):
            if symbol in dictionary:
                raise ValueError(f"{symbol!r} is already a subword; OFA appends it after them")
            dictionary.add_symbol(symbol)
        self.bos, self.pad, self.eos, self.unk = (dictionary.index(s) for s in SPECIAL_SYMBOLS)
        self.mask = dictionary.index(MASK_SYMBOL)
        # Offsets are relative to the dictionary size, as in OFA (English: 50265 and 58457).
        self.code_offset = len(dictionary) - code_dict_size - num_bins
        self.bin_offset = len(dictionary) - num_bins
        self._word_starts: torch.Tensor | None = None

    @classmethod
    def from_bpe_dir(cls, bpe_dir: str | Path, code_dict_size: int = 8192, num_bins: int = 1000) -> Self:
        """OFA's own vocabulary from ``--bpe-dir`` (``encoder.json``, ``vocab.bpe``, ``dict.txt``)."""
        bpe_dir = Path(bpe_dir)
        missing = [name for name in BPE_FILES if not (bpe_dir / name).is_file()]
        if missing:
            raise _missing_bpe_files_error(bpe_dir, missing)
        codec = GPT2BPE.from_files(bpe_dir / "encoder.json", bpe_dir / "vocab.bpe")
        tokenizer = cls(Dictionary.load(bpe_dir / "dict.txt"), codec, code_dict_size, num_bins)
        logger.info("loaded GPT-2 BPE vocabulary from %s: %d symbols", bpe_dir, len(tokenizer))
        return tokenizer

    @classmethod
    def from_tokenizer_json(cls, path: str | Path, code_dict_size: int = 8192, num_bins: int = 1000) -> Self:
        """Same id layout around a ``tokenizers`` model trained on one's own corpus.

        Trained tokens become ids 4.. in the model's id order. Trained copies of ``<s>``, ``<pad>``,
        ``</s>``, ``<unk>``, ``<mask>``, ``<code_i>`` or ``<bin_i>`` take OFA's fixed ids instead.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist (train_tokenizer_json makes one)")
        model = tokenizers.Tokenizer.from_file(str(path))
        dictionary, aliases = Dictionary(), {}
        for token, index in sorted(model.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1]):
            if token in SPECIAL_SYMBOLS or token == MASK_SYMBOL or _RESERVED.fullmatch(token):
                aliases[index] = token
            else:
                dictionary.add_symbol(str(index), count=0)
        subwords = len(dictionary) - dictionary.nspecial
        tokenizer = cls(dictionary, TokenizersCodec(model, aliases), code_dict_size, num_bins)
        logger.info("loaded %s: %d subwords, %d symbols in all", path, subwords, len(tokenizer))
        return tokenizer

    def __len__(self) -> int:
        return len(self.dictionary)

    def encode(
        self,
        text: str,
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        length: int | None = None,
        use_bpe: bool = True,
    ) -> torch.Tensor:
        """OFA's ``encode_text``: BPE (or whitespace-split symbols), truncate to ``length``, then bos/eos.

        No space is added or removed: OFA's prompts and answers carry their own leading space.
        """
        symbols = self.codec.encode(text) if use_bpe else text.split()
        ids = [self.dictionary.index(symbol) for symbol in symbols]
        if length is not None:
            ids = ids[:length]
        ids = [self.bos] * add_bos + ids + [self.eos] * add_eos
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: torch.Tensor | Iterable[int], *, split_specials: bool = True) -> str:
        """Text of ``ids``, dropping bos/eos/pad; ``<...>`` symbols stay literal.

        ``split_specials=False`` glues literals to their neighbours like the original
        (``"<bin_1><bin_2>"``); the default puts one space around them (``"<bin_1> <bin_2>"``).
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one sequence, got a tensor of shape {tuple(ids.shape)}")
            ids = ids.tolist()
        skipped = {self.bos, self.eos, self.pad}
        symbols = [self.dictionary.symbol(int(i)) for i in ids if int(i) not in skipped]
        pieces: list[tuple[bool, bytes]] = []
        for literal, group in itertools.groupby(symbols, key=_is_literal):
            if literal:
                pieces.extend((True, symbol.encode("utf-8")) for symbol in group)
            else:  # a whole run of subwords at once, so characters split across tokens come back whole
                pieces.append((False, self.codec.decode(list(group))))
        return _join_pieces(pieces, split_specials).decode("utf-8", errors="replace")

    def bin_token(self, i: int) -> int:
        """Token id of ``<bin_i>``."""
        return self.bin_offset + _checked(i, self.num_bins, "bin")

    def code_token(self, i: int) -> int:
        """Token id of ``<code_i>``."""
        return self.code_offset + _checked(i, self.code_dict_size, "code")

    def token_to_bin(self, index: int) -> int:
        """``i`` such that ``index`` is ``<bin_i>``."""
        return _checked(index - self.bin_offset, self.num_bins, "bin")

    def token_to_code(self, index: int) -> int:
        """``i`` such that ``index`` is ``<code_i>``."""
        return _checked(index - self.code_offset, self.code_dict_size, "code")

    def is_beginning_of_word(self, index: int) -> bool:
        """BART's whole-word test: does the token decode with a leading space?

        Specials and ``madeupword*`` count as word starts; ``<mask>``/``<code_i>``/``<bin_i>`` do not,
        because OFA's BPE decodes them to themselves, without a space.
        """
        if index < self.dictionary.nspecial:
            return True
        symbol = self.dictionary.symbol(index)
        if symbol.startswith("madeupword"):
            return True
        return not _is_literal(symbol) and self.codec.decode([symbol]).startswith(b" ")

    def word_start_mask(self) -> torch.Tensor:
        """``is_beginning_of_word`` for every id, as a bool tensor of shape ``(len(self),)`` (cached)."""
        if self._word_starts is None:
            self._word_starts = torch.tensor([self.is_beginning_of_word(i) for i in range(len(self))])
        return self._word_starts


def _checked(i: int, size: int, kind: str) -> int:
    if not 0 <= i < size:
        raise ValueError(f"{kind} index {i} is outside [0, {size})")
    return i


def train_tokenizer_json(files: Sequence[str | Path], out_path: str | Path, vocab_size: int) -> Path:
    """Train a GPT-2-style byte-level BPE on text ``files`` and save it as a ``tokenizer.json``.

    The four fairseq specials are reserved in the trained model so ``from_tokenizer_json`` can map them.
    """
    paths = [Path(f) for f in files]
    if missing := [str(p) for p in paths if not p.is_file()]:
        raise FileNotFoundError(f"training files not found: {', '.join(missing)}")
    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(SPECIAL_SYMBOLS):
        raise ValueError(f"vocab_size {vocab_size} is below the 256 byte symbols plus 4 specials")
    model = tokenizers.Tokenizer(tokenizers.models.BPE())
    model.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_SYMBOLS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    model.train([str(p) for p in paths], trainer)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out_path))
    logger.info("trained a %d-token byte-level BPE -> %s", model.get_vocab_size(), out_path)
    return out_path
