"""`flotilla bench live` end to end, briefly: real engine processes, flotilla's router (plain and
sliced) and both Rust routers from PyPI, one Poisson run each, a report at the end.

The Rust routers come with the `bench` extra, which `make test` installs; outside CI a checkout
without them skips, in CI (CI=true) their absence fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARMS = ["round_robin", "least_request+S16", "vllm-router cache_aware", "sglang-router cache_aware"]


def _rust_routers_installed() -> bool:
    here = Path(sys.executable).parent
    return all((here / name).exists() for name in ("vllm-router", "sglang-router"))


def test_bench_live_compares_all_routers_on_the_same_engines(tmp_path: Path) -> None:
    if not _rust_routers_installed():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("vllm-router / sglang-router missing: install the `bench` extra")
        pytest.skip("vllm-router / sglang-router not installed (pip install -e '.[bench]')")
    cmd = [
        sys.executable,
        "-c",
        "from flotilla.cli import main; main()",
        "bench",
        "live",
        "--workload",
        "poisson",
        "--rate",
        "4",
        "--duration",
        "2.5",
        "--prompt-tokens",
        "200",
        "--output-tokens",
        "40",
        "--engines",
        "2",
        "--time-scale",
        "1",
        "--rounds",
        "1",
        "--slice-tokens",
        "16",
        "--drain-timeout",
        "60",
        "--out",
        str(tmp_path),
    ]
    for arm in ARMS:
        cmd += ["--arm", arm]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    pooled = {p["arm"]: p for p in results["pooled"]}
    assert set(pooled) == set(ARMS)
    sent = results["requests_per_run"]["poisson"]
    assert sent == 10
    for arm, p in pooled.items():
        s = p["summary"]
        # Every request answered in full through every router (40 tokens each, the sliced arm in
        # three engine calls stitched into one stream), with a first token and a latency.
        assert (s["ok"], s["lost"]) == (sent, 0), arm
        assert s["output_tokens"] == 40 * sent, arm
        assert 0 < s["ttft_s"]["mean"] < s["e2e_s"]["mean"], arm
        assert p["fleet"]["samples"] >= 2 and p["fleet"]["prefill_tokens"] >= 200 * sent, arm
    report = (tmp_path / "results.md").read_text()
    for arm in ARMS:
        assert f"| {arm} | **" in report
    assert (tmp_path / "results.png").stat().st_size > 10_000
