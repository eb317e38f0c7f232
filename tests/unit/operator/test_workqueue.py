"""The work queue: deduplication, one worker per key, delayed adds."""

from __future__ import annotations

import asyncio

from flotilla.operator.workqueue import WorkQueue


async def test_adds_collapse_and_order_is_kept() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "a", "c", "b"]:
        q.add(key)
    assert len(q) == 3
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]


async def test_key_added_while_processing_is_redone_after() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")
    assert len(q) == 0, "never handed to a second worker while the first works on it"
    q.done(key)
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_add_after_fires_once_and_earliest_wins() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add_after("a", 0.2)
    q.add_after("a", 0.05)
    q.add_after("a", 0.5)
    assert await asyncio.wait_for(q.get(), 1) == "a"
    q.done("a")
    await asyncio.sleep(0.6)
    assert len(q) == 0
    q.close()


async def test_waiting_workers_wake_up() -> None:
    q: WorkQueue[int] = WorkQueue()
    got = asyncio.gather(q.get(), q.get())
    await asyncio.sleep(0.01)
    q.add(1)
    q.add(2)
    assert sorted(await asyncio.wait_for(got, 1)) == [1, 2]
