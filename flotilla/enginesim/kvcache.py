"""A paged KV cache with automatic prefix caching, shaped like vLLM v1's block pool.

Full blocks are identified by a chained hash of their tokens (parent hash + this block's ids), so a
block can be shared by every sequence with the same prefix. A block whose last user finished stays
cached but evictable, in LRU order, until an allocation needs it. Usage is reported as vLLM does:
``1 - free / total`` where cached-but-unused blocks count as free.
"""

from __future__ import annotations

from collections import OrderedDict, deque
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


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: deque[int] = deque(range(num_blocks))
        self._refs = [0] * num_blocks
        self._hash_of: dict[int, BlockHash] = {}
        self._by_hash: dict[BlockHash, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()

    @property
    def num_free(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free / self.num_blocks

    def cached_prefix(self, hashes: Sequence[BlockHash]) -> list[int]:
        """Block ids holding the longest cached prefix of `hashes` (not yet referenced)."""
        blocks: list[int] = []
        for h in hashes:
            block = self._by_hash.get(h)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def take(self, blocks: Sequence[int]) -> None:
        """Reference cached blocks found by `cached_prefix`."""
        for b in blocks:
            if self._refs[b] == 0:
                self._evictable.pop(b, None)
            self._refs[b] += 1

    def allocate(self, count: int) -> list[int] | None:
        """`count` fresh blocks, evicting least recently used cached ones; None if they do not fit."""
        if count > self.num_free:
            return None
        out: list[int] = []
        for _ in range(count):
            if self._free:
                b = self._free.popleft()
            else:
                b, _ = self._evictable.popitem(last=False)
                del self._by_hash[self._hash_of.pop(b)]
            self._refs[b] = 1
            out.append(b)
        return out

    def register(self, block: int, h: BlockHash) -> None:
        """Mark a now-full block as holding the prefix `h`; a duplicate of a cached block stays private."""
        if h in self._by_hash or block in self._hash_of:
            return
        self._by_hash[h] = block
        self._hash_of[block] = h

    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference to each block; tail blocks first so they are evicted first (as vLLM)."""
        for b in reversed(blocks):
            self._refs[b] -= 1
            if self._refs[b] > 0:
                continue
            if b in self._hash_of:
                self._evictable[b] = None
            else:
                self._free.append(b)
