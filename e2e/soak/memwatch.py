"""Watch the memory, file descriptors and threads of running processes from outside, by pid.

The soak test asks whether the router and the operator stop growing under steady work. Reading
/proc costs the watched process nothing (no agent, no tracemalloc overhead), so what is measured is
the component exactly as it runs. A leak shows as a positive trend after warm-up; the trend is a
least-squares line through the samples, which a single allocator step (a new arena) moves far less
than a first-to-last difference would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Sample:
    t_s: float
    """Seconds since the watch started."""
    rss_kib: int
    fds: int
    threads: int


@dataclass
class Series:
    name: str
    pid: int
    samples: list[Sample] = field(default_factory=list)


def read_sample(pid: int, t_s: float) -> Sample | None:
    """RSS, open fds and threads of `pid` now; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(fields["VmRSS"].split()[0])
    return Sample(t_s, rss_kib, fds, int(fields["Threads"]))


def children_by_cmdline(parent: int, needles: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """Name -> pid of `parent`'s direct children whose command line contains all of a name's words
    (the components are started by the demo steps, which keep their handles to themselves)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
            continue
        words = {a.decode(errors="replace") for a in argv}
        for name, need in needles.items():
            if all(w in words for w in need):
                found[name] = int(entry.name)
    return found


async def watch(series: list[Series], period_s: float, stop: asyncio.Event) -> None:
    """Sample every series every `period_s` until `stop` is set (reads are off the event loop)."""
    started = time.monotonic()
    while not stop.is_set():
        now = time.monotonic() - started
        for s in series:
            sample = await asyncio.to_thread(read_sample, s.pid, now)
            if sample is not None:
                s.samples.append(sample)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period_s)


@dataclass(frozen=True)
class Trend:
    """The least-squares line of RSS over the samples after warm-up."""

    slope_kib_per_s: float
    window_s: float
    samples: int
    start_mib: float
    end_mib: float
    """The line's value at the window's start and end."""
    max_mib: float

    @property
    def growth_mib(self) -> float:
        return self.end_mib - self.start_mib

    @property
    def mib_per_hour(self) -> float:
        return self.slope_kib_per_s * 3600 / 1024


def trend(samples: list[Sample], warmup_s: float, end_s: float = float("inf")) -> Trend:
    """The line through the samples taken between `warmup_s` and `end_s`."""
    kept = [s for s in samples if warmup_s <= s.t_s <= end_s]
    if len(kept) < 3:
        raise ValueError(f"only {len(kept)} samples after a warm-up of {warmup_s:g} s")
    t = np.array([s.t_s for s in kept])
    rss = np.array([s.rss_kib for s in kept], dtype=float)
    slope, intercept = np.polyfit(t, rss, 1)
    return Trend(
        slope_kib_per_s=float(slope),
        window_s=float(t[-1] - t[0]),
        samples=len(kept),
        start_mib=float(slope * t[0] + intercept) / 1024,
        end_mib=float(slope * t[-1] + intercept) / 1024,
        max_mib=float(rss.max()) / 1024,
    )


TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
    "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}  # fmt: skip


def _tcp_sockets() -> dict[str, str]:
    """Socket inode -> 'local -> remote STATE' for the TCP sockets of this network namespace."""
    out: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
            out[inode] = f"{_addr(local)} -> {_addr(remote)} {TCP_STATES.get(state, state)}"
    return out


def _addr(hex_addr: str) -> str:
    host, port = hex_addr.split(":")
    if len(host) == 8:
        host = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return f"{host}:{int(port, 16)}"


def open_fds(pid: int) -> list[str]:
    """What each of `pid`'s open fds is: a file path, a pipe, or a TCP socket with its peer and state
    (to tell a leaked connection from a pooled one when the fd count is off)."""
    sockets = _tcp_sockets()
    out = []
    for fd in sorted(Path(f"/proc/{pid}/fd").iterdir(), key=lambda p: int(p.name)):
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        inode = target.removeprefix("socket:[").removesuffix("]")
        out.append(f"{fd.name}: {sockets.get(inode, target) if target.startswith('socket:') else target}")
    return out
