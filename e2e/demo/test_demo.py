"""`flotilla demo` end to end, shortened: its own control plane, operator, placement, router,
engines and 10 s of the Mooncake trace; the summary it writes must show a healthy system."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from flotilla.localcluster.binaries import BinariesMissing, ensure_binaries, find_repo_root

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = find_repo_root(Path(__file__).resolve())


def test_short_demo_serves_every_request_on_every_instance(tmp_path: Path) -> None:
    try:
        ensure_binaries(build=False)
    except BinariesMissing as exc:
        pytest.skip(f"the demo needs the control-plane binaries: {exc}")
    trace = REPO.parent / "shared" / "data" / "traces" / "mooncake_conversation_trace.jsonl"
    if not trace.exists():
        pytest.skip(f"the demo's trace is not here: {trace}")
    out = tmp_path / "out"
    argv = [
        sys.executable, "-c", "from flotilla.cli import main; main()", "demo",
        "--duration=10", "--exit", f"--out={out}", f"--name=flotilla-demo-e2e-{uuid.uuid4().hex[:6]}",
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "All 5 replicas serve" in done.stdout
    assert "Stopping" in done.stdout

    summary = json.loads((out / "summary.json").read_text())
    total = summary["models"]["all"]
    assert total["requests"] >= 20  # 38 requests arrive in the trace's first 10 s
    assert total["failed"] == 0 and total["succeeded"] == total["requests"]
    assert set(summary["models"]) == {"llama-3.1-8b-instruct", "mistral-7b-instruct", "all"}
    for model, stats in summary["models"].items():
        assert stats["requests"] > 0, model
        assert 0 < stats["ttft_s"]["p50"] <= stats["ttft_s"]["p99"] < stats["e2e_s"]["p99"] < 120, model
        assert stats["e2e_s"]["p50"] >= stats["ttft_s"]["p50"]
    instances = summary["instances"]
    assert len(instances) == 5
    # Every engine served some of the replay, and the engines' own counters add up to the client's.
    assert all(i["requests"] > 0 for i in instances), instances
    assert sum(i["requests"] for i in instances) == total["succeeded"]
    assert all(i["node"].startswith("gpu-node-") for i in instances)
    # chat-llama spreads over zones (its spec says so, softly): both zones serve it.
    assert {i["zone"] for i in instances if i["fleet"] == "chat-llama"} == {"zone-a", "zone-b"}
    assert (out / "summary.png").stat().st_size > 10_000
    requests = json.loads((out / "requests.json").read_text())
    assert len(requests) == total["requests"]
