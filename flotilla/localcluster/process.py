"""Child processes of the local cluster: own process group, log file, ended by pid.

Every component (etcd, kube-apiserver, KWOK, engines) runs in its own session so that a Ctrl-C
in the terminal reaches only the parent, which then ends the children in order, and so that a
component's own children die with it. Processes are plain `subprocess.Popen` objects, not asyncio
transports: they are not tied to an event loop, so a sync pytest fixture can start a cluster in
one `asyncio.run` and stop it in another.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TAIL_LINES = 40
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the parent dies (Linux prctl), so that a
    test run killed from outside leaves no control plane behind on a shared machine."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a log file ("" when it does not exist yet)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), to tell a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after its closing paren are plain.
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether `pid` runs and, when `start_time` is given, is still the same process."""
    now = process_start_time(pid)
    if now is None:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    if state == "Z":
        return False
    return start_time is None or now == start_time


def terminate_pid(pid: int, start_time: int | None = None, grace_s: float = 10.0) -> None:
    """SIGTERM the process group of `pid`, then SIGKILL it after `grace_s` (blocking)."""
    if not pid_alive(pid, start_time):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(pid, start_time):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class ProcessFailed(RuntimeError):
    """A managed process exited or never became ready; the message carries its log's tail."""


@dataclass
class ManagedProcess:
    """One child process with its own log file; `start` spawns it, `stop` ends it by pid."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    # False only for `flotilla cluster up`, whose processes must outlive the command. Linux sends
    # the signal when the *thread* that started the child ends: call `start` from the event
    # loop's thread, never from `asyncio.to_thread`.
    die_with_parent: bool = True
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    start_time: int | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        self.start_time = process_start_time(self.popen.pid)

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def failure(self, what: str) -> ProcessFailed:
        """An error naming the process, what went wrong, its exit status and its log's tail."""
        status = "" if self.popen is None else f" (exit status {self.popen.poll()})"
        return ProcessFailed(
            f"{self.name}: {what}{status}; log {self.log_path}, last lines:\n{self.log_tail()}"
        )

    async def _exited_within(self, seconds: float) -> bool:
        assert self.popen is not None
        deadline = time.monotonic() + seconds
        while True:
            if self.popen.poll() is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`, and reap the child."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            await self._exited_within(grace_s)
        # The group may outlive its leader (a child that ignored SIGTERM): kill what is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        await self._exited_within(float("inf"))
