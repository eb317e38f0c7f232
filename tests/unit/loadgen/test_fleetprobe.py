"""The engines' view: metrics parsing, imbalance, counter deltas and the idle wait."""

from __future__ import annotations

import httpx
import pytest

from flotilla.loadgen.fleetprobe import FleetProbe, imbalance, parse_metrics

PAGE = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="m"}} {running}
vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}
vllm:prefix_cache_queries_total{{engine="0",model_name="m"}} {queries}
vllm:prefix_cache_hits_total{{engine="0",model_name="m"}} {hits}
vllm:num_preemptions_total{{engine="0",model_name="m"}} {preempt}
vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt}
"""


def page(
    *, running: int = 0, waiting: int = 0, queries: int = 0, hits: int = 0, preempt: int = 0, prompt: int = 0
) -> str:
    return PAGE.format(
        running=running, waiting=waiting, queries=queries, hits=hits, preempt=preempt, prompt=prompt
    )


def test_parse_and_imbalance() -> None:
    m = parse_metrics(page(running=3, waiting=1, hits=5))
    assert m["vllm:num_requests_running"] == 3 and m["vllm:prefix_cache_hits_total"] == 5
    assert imbalance([2, 2, 2, 2]) == 0.0
    assert imbalance([4, 0, 0, 0]) == pytest.approx(3**0.5)
    assert imbalance([0, 0]) is None


async def test_stats_over_samples_and_idle_wait() -> None:
    pages = {
        "http://a": [
            page(running=4, queries=100, prompt=100),
            page(running=2, queries=300, hits=150, prompt=150, preempt=1),
            page(),
        ],
        "http://b": [page(running=0), page(running=2), page()],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        key = f"http://{request.url.host}"
        text = pages[key].pop(0) if len(pages[key]) > 1 else pages[key][0]
        return httpx.Response(200, text=text)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        probe = FleetProbe(client, ["http://a", "http://b"])
        await probe.sample()  # loads 4, 0: CV 1.0
        await probe.sample()  # loads 2, 2: CV 0.0
        stats = probe.stats()
        assert await probe.wait_idle(1.0)
    assert stats.load_cv == pytest.approx(0.5)
    assert stats.max_share == pytest.approx((2.0 + 1.0) / 2)
    assert stats.prefix_hit_rate == pytest.approx(150 / 200)
    assert stats.preemptions == 1 and stats.prefill_tokens == 50
