"""Block hashes of real tokens, the keys of the engine model's prefix cache.

A full block is identified by a chained hash of its tokens (parent hash + this block's ids), so a
block can be shared by every sequence with the same prefix (vLLM's automatic prefix caching). The
cache itself is the engine model's (`flotilla.sim.kv.KvModel`), which this engine feeds one unit
per block.
"""

from __future__ import annotations

from collections.abc import Sequence

BlockHash = int


def block_hashes(tokens: Sequence[int], block_size: int, start: int = 0, parent: BlockHash = 0) -> list[int]:
    """Chained hashes of the full blocks of `tokens`, from block index `start` on."""
    out: list[int] = []
    h = parent
    for b in range(start, len(tokens) // block_size):
        h = hash((h, tuple(tokens[b * block_size : (b + 1) * block_size])))
        out.append(h)
    return out
