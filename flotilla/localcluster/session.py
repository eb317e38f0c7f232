"""Running a cluster for a person at a terminal: run dirs, state files, waiting for Ctrl-C.

`flotilla cluster up` leaves the cluster running after the command exits (its processes have
their own sessions); `state.json` in the run dir records their pids and start times, so that
`flotilla cluster down` ends exactly those processes and never a later process that reused a pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

from flotilla.localcluster.process import pid_alive, terminate_pid

# Stop order: the reverse of start order (KWOK and the controllers before the API server and etcd).
STOP_ORDER = ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


def cache_dir() -> Path:
    return Path(os.environ.get("FLOTILLA_CACHE", Path.home() / ".cache" / "flotilla"))


def default_run_dir(name: str) -> Path:
    return cache_dir() / "clusters" / name


def read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((run_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def alive_processes(state: dict[str, Any]) -> dict[str, int]:
    """Name -> pid of the state's processes that still run (and are the same processes)."""
    return {
        name: proc["pid"]
        for name, proc in state.get("processes", {}).items()
        if pid_alive(proc["pid"], proc.get("start_time"))
    }


def terminate_state(state: dict[str, Any], grace_s: float = 10.0) -> list[str]:
    """End the recorded processes in stop order (by pid, SIGTERM then SIGKILL); returns their names."""
    processes: dict[str, Any] = state.get("processes", {})
    names = [n for n in STOP_ORDER if n in processes] + [n for n in processes if n not in STOP_ORDER]
    for name in names:
        terminate_pid(processes[name]["pid"], processes[name].get("start_time"), grace_s)
    return names


@contextlib.asynccontextmanager
async def interrupt_guard() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGINT/SIGTERM for as long as the block runs, clean-up included: a second
    Ctrl-C (or `timeout`, which signals twice) must not abort the clean-up half-way."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    try:
        yield interrupted
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def unless_interrupted(work: Awaitable[object], interrupted: asyncio.Event) -> bool:
    """Run `work` to completion (True; its errors propagate), or cancel it when `interrupted` is
    set first (False)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.create_task(interrupted.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False
