"""The engines' own view of an arm: load balance over time, prefix-cache hits, preemptions.

Routers differ in what they report, so the comparison reads the engines instead: every
`interval_s` each engine's `/metrics` (vLLM's names) gives requests running and waiting; the
imbalance of a sample is the coefficient of variation of those counts across engines (0 = even),
averaged over the samples where the fleet held any request. Counters (prefix-cache queries and hits
in tokens, preemptions, prefilled tokens) are differenced over the arm. The same scrape tells when
the fleet has drained, so the next arm starts on idle engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Sequence

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict

GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
COUNTERS = (
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
)


def parse_metrics(text: str) -> dict[str, float]:
    """The wanted samples of one engine's exposition, summed over labels."""
    wanted = set(GAUGES) | set(COUNTERS)
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


STALENESS = "flotilla_router_peer_staleness_seconds"


def histogram_buckets(text: str, family: str, where: dict[str, str] | None = None) -> dict[float, float]:
    """A histogram's cumulative bucket counts (upper bound -> count), summed over the series whose
    labels include `where`."""
    out: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != family:
            continue
        for sample in fam.samples:
            if sample.name == family + "_bucket" and (where or {}).items() <= sample.labels.items():
                le = float(sample.labels["le"])
                out[le] = out.get(le, 0.0) + float(sample.value)
    return out


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket the q-quantile falls in (an upper estimate); None if empty."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    return next(b for b in bounds if buckets[b] >= q * total)


async def router_buckets(
    client: httpx.AsyncClient, routers: Sequence[str], family: str, where: dict[str, str] | None = None
) -> dict[float, float]:
    """`family`'s buckets summed over the routers' /metrics (replicas of one arm)."""
    total: dict[float, float] = {}
    for url in routers:
        with contextlib.suppress(httpx.HTTPError):
            response = await client.get(url + "/metrics")
            for le, n in histogram_buckets(response.text, family, where).items():
                total[le] = total.get(le, 0.0) + n
    return total


def imbalance(loads: Sequence[float]) -> float | None:
    """Coefficient of variation across engines; None when the fleet is idle."""
    mean = statistics.fmean(loads) if loads else 0.0
    if mean <= 0:
        return None
    return statistics.pstdev(loads) / mean


class FleetStats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    load_cv: float
    """Mean over busy samples of the CV of (running + waiting) across engines."""
    max_share: float
    """Mean over busy samples of the busiest engine's load / the mean load."""
    prefix_hit_rate: float
    """Prompt tokens served from the prefix cache / prompt tokens queried."""
    preemptions: float
    prefill_tokens: float
    """Prompt tokens computed (the enginesim counts those not served from its prefix cache)."""
    samples: int


class FleetProbe:
    """Scrapes every engine; `sample()` appends one observation."""

    def __init__(self, client: httpx.AsyncClient, engines: Sequence[str]) -> None:
        self._client = client
        self._engines = list(engines)
        self.loads: list[list[float]] = []
        self._first: dict[str, float] | None = None
        self._last: dict[str, float] = {}

    async def scrape(self) -> list[dict[str, float]]:
        async def one(url: str) -> dict[str, float]:
            with contextlib.suppress(httpx.HTTPError):
                response = await self._client.get(url + "/metrics")
                if response.status_code == 200:
                    return parse_metrics(response.text)
            return {}

        return list(await asyncio.gather(*(one(u) for u in self._engines)))

    @staticmethod
    def _totals(per_engine: list[dict[str, float]]) -> dict[str, float]:
        return {name: sum(m.get(name, 0.0) for m in per_engine) for name in COUNTERS}

    async def sample(self) -> None:
        per_engine = await self.scrape()
        self.loads.append([sum(m.get(g, 0.0) for g in GAUGES) for m in per_engine])
        totals = self._totals(per_engine)
        if self._first is None:
            self._first = totals
        self._last = totals

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        await self.sample()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            await self.sample()

    def stats(self) -> FleetStats:
        busy = [x for x in self.loads if sum(x) > 0]
        cvs = [c for x in busy if (c := imbalance(x)) is not None]
        shares = [max(x) / statistics.fmean(x) for x in busy]
        first, last = self._first or {}, self._last

        def delta(name: str) -> float:
            return last.get(name, 0.0) - first.get(name, 0.0)

        queried = delta("vllm:prefix_cache_queries_total")
        return FleetStats(
            load_cv=statistics.fmean(cvs) if cvs else 0.0,
            max_share=statistics.fmean(shares) if shares else 1.0,
            prefix_hit_rate=delta("vllm:prefix_cache_hits_total") / queried if queried > 0 else 0.0,
            preemptions=delta("vllm:num_preemptions_total"),
            prefill_tokens=delta("vllm:prompt_tokens_total"),
            samples=len(self.loads),
        )

    async def wait_idle(self, within_s: float, poll_s: float = 0.2) -> bool:
        """Until no engine runs or queues anything (True), or `within_s` passed (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while loop.time() < deadline:
            per_engine = await self.scrape()
            if all(m and sum(m.get(g, 0.0) for g in GAUGES) == 0 for m in per_engine):
                return True
            await asyncio.sleep(poll_s)
        return False
