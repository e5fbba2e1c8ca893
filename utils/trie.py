"""Prefix tree of allowed token sequences, for constrained decoding (OFA ``utils/trie.py`` semantics).

Sequences are inserted as ``[bos] + tokens + [eos]``. ``get_next_layer(prefix)`` returns the tokens that may
follow ``prefix``; a prefix that leaves the tree allows only eos, as in the original.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class Trie:
    def __init__(self, eos: int):
        self.eos = eos
        self.root: dict[int, dict] = {}

    def insert(self, sequence: Iterable[int]) -> None:
        node = self.root
        for token in sequence:
            node = node.setdefault(int(token), {})

    def node(self, prefix: Sequence[int]) -> dict[int, dict] | None:
        """The subtree reached by ``prefix``, or None when it leaves the tree."""
        node = self.root
        for token in prefix:
            node = node.get(int(token))
            if node is None:
                return None
        return node

    def get_next_layer(self, prefix: Sequence[int]) -> list[int]:
        node = self.node(prefix)
        return [self.eos] if node is None else list(node)

    def __contains__(self, sequence: Sequence[int]) -> bool:
        node = self.node(sequence)
        return node is not None and not node

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[int]], bos: int, eos: int) -> Trie:
        trie = cls(eos)
        for seq in sequences:
            trie.insert([bos, *seq, eos])
        return trie
