from flotilla.enginesim.kvcache import block_hashes


def test_hashes_are_chained_over_full_blocks_only() -> None:
    a = block_hashes([1, 2, 3, 4, 5], 2)
    b = block_hashes([9, 9, 3, 4], 2)
    assert len(a) == 2
    assert a[1] != b[1], "the same block after a different prefix is a different block"
    assert (
        block_hashes([1, 2, 3, 4, 5, 6], 2, start=2, parent=a[1]) == block_hashes([1, 2, 3, 4, 5, 6], 2)[2:]
    )
