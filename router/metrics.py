"""The router's Prometheus metrics (`flotilla_router_*`) in a registry passed in by the caller."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "flotilla_router_requests",
            "Client requests by model and HTTP status.",
            ["model", "status"],
            registry=registry,
        )
        self.ttft = Histogram(
            "flotilla_router_ttft_seconds",
            "Time from request arrival to the first byte of the engine's answer.",
            ["model"],
            buckets=_LATENCY,
            registry=registry,
        )
        self.e2e = Histogram(
            "flotilla_router_e2e_seconds",
            "Request latency, arrival to last byte.",
            ["model"],
            buckets=_LATENCY,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "flotilla_router_queue_depth",
            "Requests waiting in the router's admission queue.",
            ["model"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "flotilla_router_queue_wait_seconds",
            "Time requests spent in the admission queue.",
            ["model"],
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30),
            registry=registry,
        )
        self.policy_rejected = Gauge(
            "flotilla_router_policy_rejected",
            "1 while a model's configured policy is refused (unknown name, or params its model rejects)"
            " and the router's default balances it instead; field names the fleet's setting at fault.",
            ["model", "policy", "field"],
            registry=registry,
        )
        self.inflight = Gauge(
            "flotilla_router_inflight_requests",
            "Requests this router has on each instance.",
            ["model", "instance"],
            registry=registry,
        )
        self.retries = Counter(
            "flotilla_router_retries",
            "Requests re-sent to another instance after a connection failure.",
            ["model"],
            registry=registry,
        )
        self.rejected = Counter(
            "flotilla_router_rejected",
            "Requests refused by admission (queue full or wait exceeded).",
            ["model"],
            registry=registry,
        )
        self.ejections = Counter(
            "flotilla_router_ejections",
            "Instances taken out of rotation after failures.",
            ["instance"],
            registry=registry,
        )
        self.predictor_ratio = Histogram(
            "flotilla_router_predictor_ratio",
            "Predicted over actual output tokens of finished requests (1 = exact).",
            ["model"],
            buckets=(0.125, 0.25, 0.5, 0.67, 0.8, 0.9, 1.1, 1.25, 1.5, 2, 4, 8),
            registry=registry,
        )
        self.predictor_tau = Gauge(
            "flotilla_router_predictor_tau",
            "Kendall's tau between predicted and actual output tokens over the recent finished requests.",
            ["model"],
            registry=registry,
        )
        self.predictor_in_use = Gauge(
            "flotilla_router_predictor_in_use",
            "1 for the length predictor each model uses now (`proxy` when none is loaded).",
            ["model", "predictor"],
            registry=registry,
        )
        self.predictor_seconds = Histogram(
            "flotilla_router_predictor_seconds",
            "Time a request waits for its length prediction.",
            ["model"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=registry,
        )
        self.predictor_fallbacks = Counter(
            "flotilla_router_predictor_fallbacks",
            "Requests that went on with the fallback estimate, their learned prediction not yet in.",
            ["model"],
            registry=registry,
        )
        self.slices = Counter(
            "flotilla_router_slices",
            "Engine calls made for sliced requests (one per slice), by where the slice ran.",
            ["model", "placement"],
            registry=registry,
        )
        self.peer_link_up = Gauge(
            "flotilla_router_peer_link_up",
            "1 while this replica shares routing state with its peers (NATS connected), else 0.",
            registry=registry,
        )
        self.peers = Gauge(
            "flotilla_router_peers",
            "Peer router replicas whose state this one currently folds in.",
            registry=registry,
        )
        self.peer_staleness = Histogram(
            "flotilla_router_peer_staleness_seconds",
            "Age of this replica's accounting when its peers receive it (change to delivery, read"
            " from the echo of its own messages), by what was sent: dispatch (a request's start, end"
            " or first token), progress (predicted tokens, coalesced), heartbeat.",
            ["kind"],
            buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )
        self.peer_bad_messages = Counter(
            "flotilla_router_peer_bad_messages",
            "Messages on the shared-state subjects that were not flotilla's (ignored).",
            registry=registry,
        )
        self.routable = Gauge(
            "flotilla_router_routable_instances",
            "Instances in rotation per model.",
            ["model"],
            registry=registry,
        )
