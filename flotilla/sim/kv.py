"""KV capacity of one simulated engine: block counts, plus a prefix cache of shared units in LRU order.

Semantics follow vLLM's block pool: usage is
``1 - free / total`` with cached-but-unreferenced blocks counted as free; an allocation that does not
fit in truly free blocks evicts unreferenced cached prefixes, least recently released first; a
duplicate of an already cached prefix stays private to its sequence. What differs is granularity:
private blocks are only counted, and shared prefixes are cached per `PrefixUnit` (see
`flotilla.sim.request`), because per-block bookkeeping made 12k-token prompts the simulator's
bottleneck.
"""

from __future__ import annotations

from collections import OrderedDict


class KvModel:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.free = num_blocks
        # unit hash -> [blocks, references]
        self._units: dict[int, list[int]] = {}
        self._lru: OrderedDict[int, int] = OrderedDict()
        self._lru_blocks = 0

    @property
    def num_free(self) -> int:
        return self.free + self._lru_blocks

    @property
    def usage(self) -> float:
        return 1.0 - (self.free + self._lru_blocks) / self.num_blocks

    @property
    def cached_units(self) -> int:
        return len(self._units)

    def used_blocks(self) -> int:
        """Blocks referenced by sequences (what must never exceed capacity)."""
        return self.num_blocks - self.free - self._lru_blocks

    def allocate(self, n: int) -> bool:
        """Take `n` blocks, evicting LRU cached units if needed; False (taking nothing) if they do not fit."""
        if n > self.free + self._lru_blocks:
            return False
        while self.free < n:
            h, blocks = self._lru.popitem(last=False)
            del self._units[h]
            self._lru_blocks -= blocks
            self.free += blocks
        self.free -= n
        return True

    def is_cached(self, h: int) -> bool:
        return h in self._units

    def take(self, h: int) -> int:
        """Reference a cached unit (a prefix hit); returns its block count."""
        unit = self._units[h]
        if unit[1] == 0:
            self._lru_blocks -= self._lru.pop(h)
        unit[1] += 1
        return unit[0]

    def register(self, h: int, blocks: int) -> bool:
        """Turn `blocks` private blocks, now full with unit `h`, into a cached unit; False if a duplicate."""
        if h in self._units:
            return False
        self._units[h] = [blocks, 1]
        return True

    def release(self, units: list[int], private: int) -> None:
        """Drop a sequence's references; its tail units become the first to be evicted (as vLLM)."""
        self.free += private
        for h in reversed(units):
            unit = self._units[h]
            unit[1] -= 1
            if unit[1] == 0:
                self._lru[h] = unit[0]
                self._lru_blocks += unit[0]
