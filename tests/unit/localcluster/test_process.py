import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flotilla.localcluster.process import ManagedProcess, ProcessFailed, pid_alive, terminate_pid
from flotilla.localcluster.readiness import wait_until
from flotilla.localcluster.session import alive_processes, terminate_state


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_stop_ends_a_process_that_ignores_sigterm_and_its_children(tmp_path: Path) -> None:
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    process = ManagedProcess("stubborn", python(code), tmp_path / "stubborn.log")
    process.start()

    async def child_pid_logged() -> bool:
        return process.log_tail(1).strip().isdigit()

    await wait_until(child_pid_logged, timeout_s=10, what="child pid")
    child = int(process.log_tail(1))
    started = time.monotonic()
    await process.stop(grace_s=0.3)
    assert not process.running()
    assert time.monotonic() - started < 5
    for _ in range(100):  # the child is reaped by init a moment later
        if not pid_alive(child):
            break
        await asyncio.sleep(0.02)
    assert not pid_alive(child)


async def test_failure_message_names_the_process_and_shows_its_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        "crasher", python("print('bad flag --x'); raise SystemExit(3)"), tmp_path / "c.log"
    )
    process.start()

    async def never() -> bool:
        return False

    with pytest.raises(ProcessFailed) as info:
        await wait_until(never, timeout_s=10, what="readiness", process=process)
    message = str(info.value)
    assert "crasher: exited while waiting for readiness (exit status 3)" in message
    assert "bad flag --x" in message


async def test_wait_until_times_out_with_the_process_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        "sleeper",
        python("print('still booting', flush=True); import time; time.sleep(30)"),
        tmp_path / "s.log",
    )
    process.start()

    async def never() -> bool:
        return False

    try:
        with pytest.raises(ProcessFailed, match="timed out after 0 s waiting for x"):
            await wait_until(never, timeout_s=0.3, what="x", process=process)
        assert "still booting" in process.log_tail()
    finally:
        await process.stop()


async def test_state_termination_checks_pid_identity(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", python("import time; time.sleep(30)"), tmp_path / "s.log")
    process.start()
    state = {"processes": {"etcd": {"pid": process.pid, "start_time": process.start_time, "log": ""}}}
    stale = {
        "processes": {"etcd": {"pid": process.pid, "start_time": (process.start_time or 0) + 1, "log": ""}}
    }
    assert alive_processes(state) == {"etcd": process.pid}
    assert alive_processes(stale) == {}
    terminate_pid(process.pid, (process.start_time or 0) + 1, grace_s=0.1)  # a reused pid is left alone
    assert process.running()
    assert terminate_state(state, grace_s=2) == ["etcd"]
    await process.stop()
    assert alive_processes(state) == {}


def test_children_die_with_their_parent_unless_detached(tmp_path: Path) -> None:
    parent_code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from flotilla.localcluster.process import ManagedProcess\n"
        "tmp = Path(sys.argv[1])\n"
        "for name, dies in (('attached', True), ('detached', False)):\n"
        "    p = ManagedProcess(name, [sys.executable, '-c', 'import time; time.sleep(60)'], tmp / name,\n"
        "                       die_with_parent=dies)\n"
        "    p.start()\n"
        "    print(p.pid, p.start_time, flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", parent_code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    (attached, attached_start), (detached, detached_start) = [
        map(int, line.split()) for line in out.stdout.splitlines()
    ]
    try:
        for _ in range(250):
            if not pid_alive(attached, attached_start):
                break
            time.sleep(0.02)
        assert not pid_alive(attached, attached_start)
        assert pid_alive(detached, detached_start)
    finally:
        terminate_pid(detached, detached_start, grace_s=1)
