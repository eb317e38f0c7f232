"""Scrape engines' Prometheus /metrics, keeping only the few vLLM series routing needs.

vLLM's /metrics page is tens of kilobytes of histograms; parsing all of it for every instance a few
times a second would cost the router more CPU than it spends proxying. Lines are filtered by name
prefix first and only the matches are parsed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

from flotilla.router.instances import EngineSample, InstanceRecord, InstanceTable
from flotilla.router.upstream import EngineUnreachable, Upstream

log = logging.getLogger("flotilla.router.scrape")

_WANTED = (
    b"vllm:num_requests_running",
    b"vllm:num_requests_waiting",
    b"vllm:kv_cache_usage_perc",
    b"vllm:gpu_cache_usage_perc",  # vLLM v0's name for the same gauge
    b"vllm:cache_config_info",
    b"vllm:prefix_cache_queries_total",
    b"vllm:prefix_cache_hits_total",
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_engine_metrics(text: bytes) -> EngineSample:
    """Sum each wanted series over its label sets (several engines or models per process add up)."""
    values: dict[str, float] = {}
    block_size = num_blocks = None
    for line in text.splitlines():
        if not line.startswith(_WANTED):
            continue
        decoded = line.decode(errors="replace")
        name_end = decoded.find("{")
        if name_end < 0:
            name_end = decoded.find(" ")
        name = decoded[:name_end]
        if name == "vllm:cache_config_info":
            labels = dict(_LABEL.findall(decoded[name_end : decoded.rfind("}")]))
            block_size = int(labels.get("block_size", "0") or 0) or None
            num_blocks = int(labels.get("num_gpu_blocks", "0") or 0) or None
            continue
        try:
            value = float(decoded.rsplit(" ", 1)[-1])
        except ValueError:
            continue
        values[name] = values.get(name, 0.0) + value
    kv = values.get("vllm:kv_cache_usage_perc", values.get("vllm:gpu_cache_usage_perc", 0.0))
    capacity = block_size * num_blocks if block_size and num_blocks else None
    return EngineSample(
        running=int(values.get("vllm:num_requests_running", 0)),
        waiting=int(values.get("vllm:num_requests_waiting", 0)),
        kv_usage=kv,
        kv_capacity_tokens=capacity,
        prefix_queries=values.get("vllm:prefix_cache_queries_total", 0.0),
        prefix_hits=values.get("vllm:prefix_cache_hits_total", 0.0),
    )


class Scraper:
    """Scrape every instance each interval; failures eject, a later success re-admits (the probe)."""

    def __init__(
        self,
        table: InstanceTable,
        client: Upstream,
        *,
        interval_s: float,
        timeout_s: float,
        eject_after: int,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._table = table
        self._client = client
        self._interval = interval_s
        self._timeout = timeout_s
        self._eject_after = eject_after
        self._on_change = on_change

    async def scrape_once(self) -> None:
        records = self._table.all()
        await asyncio.gather(*(self._scrape(r) for r in records))

    async def _scrape(self, record: InstanceRecord) -> None:
        was_ejected = record.ejected
        try:
            status, body = await self._client.get(f"{record.url}/metrics", self._timeout)
            if status != 200:
                raise EngineUnreachable(f"/metrics answered {status}")
            record.record_sample(parse_engine_metrics(body))
        except (EngineUnreachable, ValueError) as e:
            record.record_failure(self._eject_after)
            if record.ejected and not was_ejected:
                log.warning("instance ejected", extra={"instance": record.id, "error": repr(e)})
        if was_ejected and not record.ejected:
            log.info("instance back in rotation", extra={"instance": record.id})
        if was_ejected != record.ejected and self._on_change is not None:
            self._on_change()

    async def run(self) -> None:
        while True:
            await self.scrape_once()
            await asyncio.sleep(self._interval)
