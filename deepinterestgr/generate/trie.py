"""A prefix trie over the catalog's SID tokens, stored as per-level CSR tensors for batched lookups.

Level t (t = 0..S-1) has `num_nodes[t]` prefixes of length t (level 0: the single root). Node n's children are the
CSR slice `ptr[t][n] : ptr[t][n+1]` of `child_token[t]` (sorted) and `child_node[t]` (node ids at level t+1). Leaves
(level S) map to item ids. Every lookup is a tensor op over the whole batch x beam: no Python loop over beams or
items, and memory is O(number of trie edges), not O(prefixes x vocabulary).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from deepinterestgr.generate.tokenizer import SIDTokenizer

DEAD = -1  # node id of a beam that has no valid continuation (padding beam)


class TrieLevel(NamedTuple):
    ptr: torch.Tensor  # [num_nodes + 1] long, CSR row pointers
    child_token: torch.Tensor  # [num_edges] long, global token ids, sorted within each node
    child_node: torch.Tensor  # [num_edges] long, node ids at the next level


class SIDTrie:
    def __init__(self, levels: list[TrieLevel], leaf_items: torch.Tensor, vocab_size: int) -> None:
        self.levels = levels
        self.leaf_items = leaf_items  # [num_leaves] long: item id of each level-S node
        self.vocab_size = vocab_size
        self.depth = len(levels)

    @classmethod
    def from_tokenizer(cls, tok: SIDTokenizer, device: torch.device | str | None = None) -> "SIDTrie":
        return cls.from_item_tokens(tok.item_tokens, vocab_size=tok.vocab_size, device=device)

    @classmethod
    def from_item_tokens(cls, item_tokens: torch.Tensor, *, vocab_size: int, device=None) -> "SIDTrie":
        """Build from SID tokens [N, S] (unique rows); row index = item id."""
        item_tokens = item_tokens.long().cpu()
        n, depth = item_tokens.shape
        if n == 0:
            raise ValueError("cannot build a SID trie over an empty catalog")
        if torch.unique(item_tokens, dim=0).shape[0] != n:
            raise ValueError("SID tokens are not unique: two items share a SID; the table must be collision-free")
        node = torch.zeros(n, dtype=torch.long)  # every item's prefix node at the current level (root = 0)
        levels = []
        for t in range(depth):
            # next-level node of each item = unique (parent node, token) pair; sort key keeps CSR order
            key = node * vocab_size + item_tokens[:, t]
            edge_keys, child_of_item = torch.unique(key, return_inverse=True)  # sorted: by parent, then token
            parents, tokens = edge_keys // vocab_size, edge_keys % vocab_size
            num_nodes = int(node.max()) + 1
            counts = torch.bincount(parents, minlength=num_nodes)
            ptr = torch.zeros(num_nodes + 1, dtype=torch.long)
            ptr[1:] = torch.cumsum(counts, 0)
            levels.append(TrieLevel(ptr, tokens, torch.arange(len(edge_keys))))
            node = child_of_item
        leaf_items = torch.empty(int(node.max()) + 1, dtype=torch.long)
        leaf_items[node] = torch.arange(n)
        trie = cls(levels, leaf_items, vocab_size)
        return trie.to(device) if device is not None else trie

    def to(self, device) -> "SIDTrie":
        levels = [TrieLevel(*(x.to(device) for x in lvl)) for lvl in self.levels]
        return SIDTrie(levels, self.leaf_items.to(device), self.vocab_size)

    @property
    def device(self) -> torch.device:
        return self.leaf_items.device

    @property
    def num_items(self) -> int:
        return len(self.leaf_items)

    def root(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.long, device=self.device)

    def token_window(self, level: int) -> tuple[int, int]:
        """[lo, hi): the token ids that occur at `level` (a SID tokenizer gives each level its own contiguous range),
        so search can rank the level's tokens instead of the whole vocabulary."""
        cache = self.__dict__.setdefault("_window_cache", {})
        if level not in cache:
            tokens = self.levels[level].child_token
            cache[level] = (int(tokens.min()), int(tokens.max()) + 1)
        return cache[level]

    def edges(self, level: int, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every (row, edge) continuing prefixes `nodes` [N] (flat): `rows` [E] indexes `nodes`, `edge` [E] indexes
        the level's `child_token` / `child_node`; grouped by row in order, tokens ascending inside a row. DEAD rows
        have none. Raises if a live node has no continuation: an empty allowed set must never become an
        unconstrained step."""
        lvl = self.levels[level]
        live = nodes != DEAD
        safe = nodes.clamp(min=0)
        start = lvl.ptr.index_select(0, safe)  # index_select: several times faster than `[]` on CPU for 1-d
        count = torch.where(live, lvl.ptr.index_select(0, safe + 1) - start, torch.zeros_like(start))
        if bool((live & (count == 0)).any()):
            raise RuntimeError(f"SID trie level {level}: a live prefix has no allowed continuation (corrupt trie)")
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), count)
        # edge index of each (row, child): start[row] + rank of the child inside the row
        offset = (start - (torch.cumsum(count, 0) - count)).index_select(0, rows)
        return rows, offset + torch.arange(len(rows), device=nodes.device)

    def allowed_mask(self, level: int, nodes: torch.Tensor, *, window: tuple[int, int] | None = None) -> torch.Tensor:
        """Bool [*nodes.shape, vocab_size]: tokens that extend each prefix node to a catalog SID. DEAD -> all False.

        With `window=self.token_window(level)` the last dim covers only that token range (column j = token lo + j).
        """
        lo, hi = window if window is not None else (0, self.vocab_size)
        flat = nodes.reshape(-1)
        rows, edge = self.edges(level, flat)
        tokens = self.levels[level].child_token[edge] - lo
        if window is not None and len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= hi - lo):
            raise ValueError(f"SID trie level {level}: window {window} does not cover the level's tokens")
        mask = torch.zeros(len(flat), hi - lo, dtype=torch.bool, device=flat.device)
        mask[rows, tokens] = True
        return mask.view(*nodes.shape, hi - lo)

    def path_masks(self, tokens: torch.Tensor, *, strict: bool = True) -> torch.Tensor:
        """Bool [..., S, vocab_size]: the allowed tokens at every step of SIDs `tokens` [..., S] (teacher forcing with
        a catalog-normalised loss). A row that leaves the trie raises, or with strict=False gets no allowed tokens
        from that step on (padding beams)."""
        nodes = self.root(tokens.shape[:-1])
        masks = []
        for t in range(self.depth):
            masks.append(self.allowed_mask(t, nodes))
            nodes = self.step(t, nodes, tokens[..., t])
            if strict and bool((nodes == DEAD).any()):
                raise ValueError(f"path_masks: a target's first {t + 1} tokens are not a catalog SID prefix")
        return torch.stack(masks, dim=-2)

    def step(self, level: int, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child node ids after appending `tokens` to prefixes `nodes` (same shapes); DEAD where not a valid edge."""
        lvl = self.levels[level]
        live = nodes != DEAD
        safe = nodes.clamp(min=0)
        start, end = lvl.ptr[safe], lvl.ptr[safe + 1]
        # binary search of the token inside each node's sorted child slice, via a global key
        edge_keys = self._edge_keys(level)
        key = safe * self.vocab_size + tokens.long()
        pos = torch.searchsorted(edge_keys, key.reshape(-1)).view_as(key).clamp(max=len(edge_keys) - 1)
        ok = live & (edge_keys[pos] == key) & (pos >= start) & (pos < end)
        return torch.where(ok, lvl.child_node[pos], torch.full_like(nodes, DEAD))

    def _edge_keys(self, level: int) -> torch.Tensor:
        cache = self.__dict__.setdefault("_edge_key_cache", {})
        lvl = self.levels[level]
        if level not in cache or cache[level].device != lvl.child_token.device:
            parents = torch.repeat_interleave(torch.arange(len(lvl.ptr) - 1, device=lvl.ptr.device),
                                              lvl.ptr[1:] - lvl.ptr[:-1])
            cache[level] = parents * self.vocab_size + lvl.child_token
        return cache[level]

    def items_of_leaves(self, nodes: torch.Tensor) -> torch.Tensor:
        """Item ids of level-S nodes; -1 for DEAD."""
        return torch.where(nodes != DEAD, self.leaf_items[nodes.clamp(min=0)], torch.full_like(nodes, -1))

    def contains(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bool [...]: whether SID tokens [..., S] are a catalog SID (walks the trie level by level)."""
        nodes = self.root(tokens.shape[:-1])
        for t in range(self.depth):
            nodes = self.step(t, nodes, tokens[..., t])
        return nodes != DEAD
