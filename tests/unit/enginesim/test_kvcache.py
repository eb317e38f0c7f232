from flotilla.enginesim.kvcache import BlockPool, block_hashes


def test_hashes_are_chained_over_full_blocks_only() -> None:
    a = block_hashes([1, 2, 3, 4, 5], 2)
    b = block_hashes([9, 9, 3, 4], 2)
    assert len(a) == 2
    assert a[1] != b[1], "the same block after a different prefix is a different block"
    assert (
        block_hashes([1, 2, 3, 4, 5, 6], 2, start=2, parent=a[1]) == block_hashes([1, 2, 3, 4, 5, 6], 2)[2:]
    )


def test_released_blocks_stay_cached_until_evicted_lru() -> None:
    pool = BlockPool(4, 2)
    first = pool.allocate(2)
    assert first is not None
    hashes = block_hashes([1, 2, 3, 4], 2)
    for block, h in zip(first, hashes, strict=True):
        pool.register(block, h)
    pool.release(first)
    assert pool.usage == 0.0, "cached but unused blocks count as free, as in vLLM"
    assert pool.cached_prefix(hashes) == first
    other = pool.allocate(3)  # two free blocks plus one eviction: the tail block goes first
    assert other is not None
    assert pool.cached_prefix(hashes) == first[:1]
    assert pool.allocate(2) is None


def test_shared_prefix_blocks_are_reference_counted() -> None:
    pool = BlockPool(4, 2)
    blocks = pool.allocate(1)
    assert blocks is not None
    pool.register(blocks[0], 42)
    pool.take(pool.cached_prefix([42]))
    pool.release(blocks)
    assert pool.usage == 0.25, "still referenced by the second user"
    pool.release(blocks)
    assert pool.usage == 0.0
