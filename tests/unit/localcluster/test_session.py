import asyncio
import os
import signal

from flotilla.localcluster.session import interrupt_guard, unless_interrupted


async def test_work_that_finishes_first_reports_done() -> None:
    interrupted = asyncio.Event()
    assert await unless_interrupted(asyncio.sleep(0), interrupted) is True


async def test_interrupt_cancels_the_work() -> None:
    interrupted = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.05, interrupted.set)
    assert await unless_interrupted(slow(), interrupted) is False
    assert cancelled.is_set()


async def test_sigint_sets_the_event_for_the_whole_block_including_clean_up() -> None:
    async with interrupt_guard() as interrupted:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(interrupted.wait(), 5)
        interrupted.clear()
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C during clean-up: no KeyboardInterrupt
        await asyncio.wait_for(interrupted.wait(), 5)
