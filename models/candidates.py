"""All-candidate scoring (OFA's VQA / SNLI-VE / ImageNet "allcand" inference, spec §4.2), without its waste.

The score of candidate ``a_1..a_L`` given a sample is the sum over its tokens and the final eos of
``log softmax over the trie-allowed tokens`` (no length normalisation), exactly what the original computes
by decoding ``prompt + answer`` for every candidate with masked logits.

Here the decoder is causal, so every candidate sharing a prefix shares its hidden states: the candidates'
trie is decoded level by level (one decoder step per depth, batched over the trie nodes at that depth),
the prompt is decoded once and its keys/values reused, the encoder output and its cross-attention keys and
values are computed once per sample, and logits are computed only for the allowed next tokens of each node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from models.decoder import DecoderState
from models.encoder import EncoderOut

BOS, EOS = 0, 2


@dataclass
class CandidateTrie:
    """The candidates' prefix tree. Node 0 is the root (the prompt's last step); node n >= 1 is reached
    by token ``token[n]`` from ``parent[n]``. Edges are the nodes' incoming arcs plus one eos arc per
    candidate end; ``paths`` lists each candidate's edge ids (-1 padded)."""

    parent: Tensor  # (N,) long, -1 for the root
    token: Tensor  # (N,) long
    levels: list[Tensor]  # node ids at depth 1, 2, ...
    edge_parent: Tensor  # (E,)
    edge_token: Tensor  # (E,)
    paths: Tensor  # (C, max_len + 1) edge ids, -1 padded

    @classmethod
    def build(cls, candidates: Sequence[Sequence[int]], eos: int = EOS) -> CandidateTrie:
        index: dict[tuple[int, int], int] = {}
        parent, token, depth = [-1], [BOS], [0]
        eos_edges: dict[int, int] = {}  # end node -> eos edge number
        ends = []
        for cand in candidates:
            node = 0
            for tok in cand:
                key = (node, int(tok))
                if key not in index:
                    index[key] = len(parent)
                    parent.append(node)
                    token.append(int(tok))
                    depth.append(depth[node] + 1)
                node = index[key]
            eos_edges.setdefault(node, len(eos_edges))
            ends.append(node)
        nodes = len(parent)
        width = max((len(c) for c in candidates), default=0) + 1
        paths = torch.full((len(candidates), width), -1, dtype=torch.long)
        for c, end in enumerate(ends):
            node, edges = end, [nodes - 1 + eos_edges[end]]
            while node != 0:
                edges.append(node - 1)  # node n's incoming arc is edge n - 1
                node = parent[node]
            paths[c, : len(edges)] = torch.tensor(edges[::-1])
        depth_t = torch.tensor(depth)
        levels = [(depth_t == d).nonzero().squeeze(1) for d in range(1, int(depth_t.max()) + 1)]
        eos_parents = sorted(eos_edges, key=eos_edges.get)
        return cls(
            parent=torch.tensor(parent),
            token=torch.tensor(token),
            levels=levels,
            edge_parent=torch.tensor(parent[1:] + eos_parents, dtype=torch.long),
            edge_token=torch.tensor(token[1:] + [eos] * len(eos_parents), dtype=torch.long),
            paths=paths,
        )


def _prompt_state(model, prompt: Tensor, enc: EncoderOut) -> tuple[DecoderState, Tensor]:
    """Decode the prompt (1, P) once; returns its cache and the last step's hidden state (D,)."""
    state = DecoderState()
    feats, _ = model.decoder(prompt, enc, state=state, features_only=True)
    return state, feats[0, -1]


def _expand_state(prompt_state: DecoderState, path_kv: list[tuple[Tensor, Tensor]], rows: int) -> DecoderState:
    """A cache for ``rows`` trie nodes: the shared prompt keys/values, then each node's ancestors'."""
    state = DecoderState(cross_pos_k=prompt_state.cross_pos_k)
    layers = []
    for layer, (k_path, v_path) in zip(prompt_state.layers, path_kv, strict=True):
        k = layer["self"]["k"].expand(rows, -1, -1, -1)
        v = layer["self"]["v"].expand(rows, -1, -1, -1)
        layers.append(
            {
                "self": {"k": torch.cat([k, k_path], 2), "v": torch.cat([v, v_path], 2)},
                "cross": layer["cross"],
            }
        )
    state.layers = layers
    past = prompt_state.padding.size(1) + path_kv[0][0].size(2)
    state.padding = torch.zeros(rows, past, dtype=torch.bool, device=prompt_state.padding.device)
    return state


def _node_states(model, trie: CandidateTrie, prompt: Tensor, enc: EncoderOut, chunk: int) -> Tensor:
    """Hidden states (N, D) of every trie node for one sample (prompt (1, P), enc with batch 1)."""
    prompt_state, root = _prompt_state(model, prompt, enc)
    hidden = root.new_empty(trie.parent.numel(), root.numel())
    hidden[0] = root
    n_layers = len(prompt_state.layers)
    # own keys/values of every node, one (N, H, 1, dh) pair per layer, filled level by level
    own_k: list[Tensor | None] = [None] * n_layers
    own_v: list[Tensor | None] = [None] * n_layers
    paths: dict[int, list[int]] = {0: []}
    for level in trie.levels:
        for start in range(0, level.numel(), chunk):
            nodes = level[start : start + chunk]
            anc = [paths[int(trie.parent[n])] for n in nodes.tolist()]  # ancestors below the root
            anc_t = torch.tensor(anc, dtype=torch.long).view(nodes.numel(), len(anc[0]))
            path_kv = []
            for i in range(n_layers):
                if anc_t.size(1) == 0:
                    empty = prompt_state.layers[i]["self"]["k"][:, :, :0].expand(nodes.numel(), -1, -1, -1)
                    path_kv.append((empty, empty))
                else:
                    path_kv.append(
                        (
                            own_k[i][anc_t].squeeze(3).transpose(1, 2),
                            own_v[i][anc_t].squeeze(3).transpose(1, 2),
                        )
                    )
            state = _expand_state(prompt_state, path_kv, nodes.numel())
            path_tokens = trie.token[torch.cat([anc_t, nodes[:, None]], 1)].to(prompt.device)
            tokens = torch.cat([prompt.expand(nodes.numel(), -1), path_tokens], 1)
            feats, _ = model.decoder(tokens, enc, state=state, features_only=True)
            hidden[nodes] = feats[:, -1]
            for i, layer in enumerate(state.layers):
                if own_k[i] is None:
                    shape = (
                        trie.parent.numel(),
                        *layer["self"]["k"].shape[1:2],
                        1,
                        layer["self"]["k"].size(3),
                    )
                    own_k[i] = layer["self"]["k"].new_zeros(shape)
                    own_v[i] = layer["self"]["v"].new_zeros(shape)
                own_k[i][nodes] = layer["self"]["k"][:, :, -1:]
                own_v[i][nodes] = layer["self"]["v"][:, :, -1:]
        for n in level.tolist():
            paths[n] = paths[int(trie.parent[n])] + [n]
    return hidden


def _edge_log_probs(model, trie: CandidateTrie, hidden: Tensor) -> Tensor:
    """log softmax over each node's allowed next tokens, for every edge: (E,)."""
    weight = model.decoder.output_projection.weight
    parents, tokens = trie.edge_parent.to(hidden.device), trie.edge_token.to(hidden.device)
    logits = (hidden[parents] * weight[tokens]).sum(-1).float()
    nodes = hidden.size(0)
    peak = torch.full((nodes,), float("-inf"), device=hidden.device).scatter_reduce(0, parents, logits, "amax")
    total = torch.zeros(nodes, device=hidden.device).index_add(0, parents, (logits - peak[parents]).exp())
    return logits - peak[parents] - total.log()[parents]


@torch.no_grad()
def score_candidates(
    model,
    net_input: dict,
    candidates: Sequence[Sequence[int]] | CandidateTrie,
    decoder_prompts: Sequence[Sequence[int]] | None = None,
    chunk: int = 512,
) -> Tensor:
    """(B, C) summed log-probs of every candidate token sequence (without bos/eos) for each sample.

    ``decoder_prompts[b]`` is the sample's decoder prefix starting with bos (OFA's ``decoder_prompts``:
    ``[bos]`` for prompt_type none, ``[bos] + question`` for prev_output); default ``[bos]``.
    """
    trie = candidates if isinstance(candidates, CandidateTrie) else CandidateTrie.build(candidates)
    enc = model.encode(**net_input)
    bsz = enc.hidden.size(0)
    prompts = decoder_prompts if decoder_prompts is not None else [[BOS]] * bsz
    device = enc.hidden.device
    paths = trie.paths.to(device)
    results = []
    for b in range(bsz):
        prompt = torch.tensor([list(prompts[b])], dtype=torch.long, device=device)
        hidden = _node_states(model, trie, prompt, enc.index_select(torch.tensor([b], device=device)), chunk)
        edge_lp = _edge_log_probs(model, trie, hidden)
        per_step = torch.where(paths >= 0, edge_lp[paths.clamp(min=0)], torch.zeros((), device=device))
        results.append(per_step.sum(1))
    return torch.stack(results)
