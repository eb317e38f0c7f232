"""Rolling updates on a real control plane: the bounds hold throughout, and a rollout survives an
operator killed in the middle of it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from typing import Any

import pytest

from flotilla.api import labels

pytestmark = pytest.mark.e2e

# KWOK's pod-ready stage waits this long (ms) before a pod turns Ready: a rollout takes a while.
SLOW_READY = {"pod-ready.stage.kwok.x-k8s.io/delay": "1500"}


@dataclass
class Timeline:
    """(ready, total) of the fleet's live pods, sampled every 50 ms."""

    samples: list[tuple[int, int]] = field(default_factory=list)
    revisions: set[str] = field(default_factory=set)


async def _sample(fleets: Any, name: str, timeline: Timeline) -> None:
    while True:
        pods = await fleets.pods(name)
        ready = sum(
            any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) for p in pods
        )
        timeline.samples.append((ready, len(pods)))
        timeline.revisions |= {p.metadata.labels[labels.LABEL_REVISION] for p in pods}
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def recording(fleets: Any, name: str) -> Any:
    timeline = Timeline()
    task = asyncio.create_task(_sample(fleets, name, timeline))
    try:
        yield timeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(("surge", "unavailable"), [(1, 0), (0, 1), (2, 1)])
async def test_rolling_update_respects_bounds(
    operator: Any, binder: Any, fleets: Any, surge: int, unavailable: int
) -> None:
    n = 4
    rollout = {"maxSurge": surge, "maxUnavailable": unavailable}
    await fleets.create(fleets.manifest("roll", n, rollout=rollout, podAnnotations=SLOW_READY))
    before = await fleets.wait_ready("roll", n)
    old_revision = before[0].metadata.labels[labels.LABEL_REVISION]
    async with recording(fleets, "roll") as timeline:
        await fleets.patch_spec("roll", {"engine": {"extraArgs": ["--seed=7"]}})
        after = await fleets.wait_ready("roll", n, timeout_s=90)
    new_revision = after[0].metadata.labels[labels.LABEL_REVISION]
    assert new_revision != old_revision
    assert all("--seed=7" in p.spec.containers[0].args for p in after)
    assert timeline.revisions >= {old_revision, new_revision}
    assert max(total for _, total in timeline.samples) <= n + surge, timeline.samples
    assert min(ready for ready, _ in timeline.samples) >= n - unavailable, timeline.samples
    fleet = await fleets.get("roll")
    assert fleet["status"]["updatedReplicas"] == n
    assert fleet["status"]["currentRevision"] == new_revision


async def test_rollout_completes_across_an_operator_kill(operator: Any, binder: Any, fleets: Any) -> None:
    n = 4
    await fleets.create(
        fleets.manifest("survivor", n, podAnnotations={"pod-ready.stage.kwok.x-k8s.io/delay": "2500"})
    )
    before = await fleets.wait_ready("survivor", n)
    old_revision = before[0].metadata.labels[labels.LABEL_REVISION]
    async with recording(fleets, "survivor") as timeline:
        await fleets.patch_spec("survivor", {"engine": {"maxNumSeqs": 64}})

        async def rollout_started() -> bool:
            pods = await fleets.pods("survivor")
            return any(p.metadata.labels[labels.LABEL_REVISION] != old_revision for p in pods)

        from flotilla.localcluster.readiness import wait_until

        await wait_until(rollout_started, timeout_s=30, what="the first new pod")
        operator.stop(signal.SIGKILL)  # no clean shutdown: the lease is not released either
        pods = await fleets.pods("survivor")
        assert any(p.metadata.labels[labels.LABEL_REVISION] == old_revision for p in pods), "mid-rollout"
        operator.start()
        after = await fleets.wait_ready("survivor", n, timeout_s=90)
    assert all("--max-num-seqs" in p.spec.containers[0].args for p in after)
    assert max(total for _, total in timeline.samples) <= n + 1
    assert min(ready for ready, _ in timeline.samples) >= n
