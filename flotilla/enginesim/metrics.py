"""The engine's Prometheus metrics under vLLM's names, in a registry owned by one engine.

Names and label sets follow vLLM v1 (`vllm:num_requests_running{model_name,engine}`, ...), so the
router's scraper and dashboards work unchanged against real vLLM.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry, *, model_name: str, cache_info: dict[str, str]) -> None:
        labels = ["model_name", "engine"]
        values = {"model_name": model_name, "engine": "0"}
        self.registry = registry
        self.running = Gauge(
            "vllm:num_requests_running", "Requests in model execution batches.", labels, registry=registry
        ).labels(**values)
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting to be processed.", labels, registry=registry
        ).labels(**values)
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            labels,
            registry=registry,
        ).labels(**values)
        self.prefix_queries = Counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in queried tokens.", labels, registry=registry
        ).labels(**values)
        self.prefix_hits = Counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in cached tokens.", labels, registry=registry
        ).labels(**values)
        self.preemptions = Counter(
            "vllm:num_preemptions", "Cumulative number of preemptions.", labels, registry=registry
        ).labels(**values)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=registry
        ).labels(**values)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=registry
        ).labels(**values)
        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*labels, "finished_reason"],
            registry=registry,
        )
        self._values = values
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End to end request latency in seconds.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        ).labels(**values)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token in seconds.",
            labels,
            buckets=_TTFT_BUCKETS,
            registry=registry,
        ).labels(**values)
        info = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            list(cache_info),
            registry=registry,
        )
        info.labels(**cache_info).set(1)

    def finished(self, reason: str) -> None:
        self._success.labels(finished_reason=reason, **self._values).inc()
