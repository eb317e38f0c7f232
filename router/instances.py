"""The live instance table: discovery's view of the fleet plus per-instance state.

Each record joins three sources: the spec from discovery (url, model), the last scrape of the
engine's /metrics, and the router's own accounting of requests in flight. `view()` freezes a
record into the `InstanceView` a policy sees. Records survive discovery updates that keep the
instance, so accounting is never lost when a fleet changes. Beside the records, the table holds
each model's routing settings (policy, params, predictor, slice length) as discovery resolved them
once per model from its fleet (or the static configuration): instances carry none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flotilla.router.model_routing import NOT_CONFIGURED, ModelRouting
from flotilla.router.policies.base import InstanceView


@dataclass(frozen=True)
class InstanceSpec:
    """One routable engine, as discovery reports it."""

    id: str
    url: str
    model: str
    max_inflight: int | None = None


@dataclass(frozen=True)
class EngineSample:
    """What one /metrics scrape said."""

    running: int
    waiting: int
    kv_usage: float
    kv_capacity_tokens: int | None = None
    prefix_queries: float = 0.0
    prefix_hits: float = 0.0


@dataclass(frozen=True, slots=True)
class PeerLoad:
    """Requests other router replicas have on an instance, as they last published them (`peers`)."""

    inflight: int = 0
    tokens: int = 0
    """Prompt + predicted output tokens of those requests."""
    predicted: float = 0.0
    """Their predicted output tokens still to come."""
    prefill: int = 0
    """Their prompt tokens with no first token yet."""

    def __add__(self, other: PeerLoad) -> PeerLoad:
        return PeerLoad(
            self.inflight + other.inflight,
            self.tokens + other.tokens,
            self.predicted + other.predicted,
            self.prefill + other.prefill,
        )


NO_PEERS = PeerLoad()
_ACCOUNTING = frozenset({"inflight", "inflight_tokens", "predicted_remaining", "pending_prefill"})

AccountingWatch = Callable[["InstanceRecord", bool], None]
"""Called with the record whose accounting changed, and whether the change is a request's start,
end or first token (at most a few per request), rather than the per-token progress of its
prediction."""


@dataclass(eq=False)
class InstanceRecord:
    spec: InstanceSpec
    max_inflight: int
    sample: EngineSample | None = None
    inflight: int = 0
    inflight_tokens: int = 0
    predicted_remaining: float = 0.0
    pending_prefill: int = 0
    """Prompt tokens of own requests with no first token yet (see InstanceView.pending_prefill_tokens)."""
    # Own accounting at the time of the last scrape, to correct the scrape by what changed since.
    inflight_at_scrape: int = 0
    tokens_at_scrape: int = 0
    prefill_at_scrape: int = 0
    peer: PeerLoad = NO_PEERS
    """The other replicas' requests on the instance (shared state; none without it)."""
    peer_at_scrape: PeerLoad = NO_PEERS
    failures: int = 0
    ejected: bool = False
    # The frozen view, rebuilt only after a change: with N instances every request ranks N views,
    # and most of them did not change since the last request.
    _view: InstanceView | None = field(default=None, repr=False)
    watch: AccountingWatch | None = field(default=None, repr=False)
    """Told of every change of this router's accounting (the shared state publishes it)."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name != "_view":
            object.__setattr__(self, "_view", None)
            if name in _ACCOUNTING and self.watch is not None:
                # Everything but the per-token progress of predictions changes once per request.
                self.watch(self, name != "predicted_remaining")

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def has_capacity(self) -> bool:
        return self.inflight < self.max_inflight

    def record_sample(self, sample: EngineSample) -> None:
        self.sample = sample
        self.inflight_at_scrape = self.inflight
        self.tokens_at_scrape = self.inflight_tokens
        self.prefill_at_scrape = self.pending_prefill
        self.peer_at_scrape = self.peer
        self.failures = 0
        self.ejected = False

    def record_failure(self, eject_after: int) -> None:
        self.failures += 1
        if self.failures >= eject_after:
            self.ejected = True

    def eject(self) -> None:
        self.ejected = True

    def view(self) -> InstanceView:
        if self._view is None:
            self._view = self._make_view()
        return self._view

    def _make_view(self) -> InstanceView:
        s, peer = self.sample, self.peer
        est = float(self.inflight + peer.inflight)  # every replica's requests that this one knows of
        kv = 0.0
        if s is not None:
            # The scrape counted every router's requests then; what changed since is known exactly
            # for this replica's and, as last published, for its peers'.
            since = self.inflight - self.inflight_at_scrape + peer.inflight - self.peer_at_scrape.inflight
            est = max(est, s.running + s.waiting + since)
            kv = s.kv_usage
            if s.kv_capacity_tokens:
                tokens_since = (
                    self.inflight_tokens - self.tokens_at_scrape + peer.tokens - self.peer_at_scrape.tokens
                )
                # Requests still waiting for their first token at the scrape hold little or no KV
                # in it yet (vLLM allocates as it schedules): count their prompts, or a burst
                # queued inside the engine vanishes from the estimate at every scrape and the
                # budget lets more in, to be preempted (benchmarks/backlog, bursts).
                waiting = self.prefill_at_scrape + self.peer_at_scrape.prefill
                kv += (tokens_since + waiting) / s.kv_capacity_tokens
        return InstanceView(
            id=self.id,
            running=s.running if s else 0,
            waiting=s.waiting if s else 0,
            kv_usage=s.kv_usage if s else 0.0,
            kv_capacity_tokens=s.kv_capacity_tokens if s else None,
            inflight=self.inflight,
            inflight_tokens=self.inflight_tokens,
            context_tokens=max(0.0, self.inflight_tokens - self.predicted_remaining),
            peer_inflight=peer.inflight,
            predicted_remaining_tokens=self.predicted_remaining + peer.predicted,
            pending_prefill_tokens=self.pending_prefill + peer.prefill,
            est_requests=est,
            est_kv_usage=min(1.0, max(0.0, kv)),
            max_inflight=self.max_inflight,
        )


class InstanceTable:
    def __init__(self, *, default_max_inflight: int) -> None:
        self._default_max = default_max_inflight
        self._watch: AccountingWatch | None = None
        self._records: dict[str, InstanceRecord] = {}
        self._routing: Mapping[str, ModelRouting] = {}

    def update(
        self, specs: Iterable[InstanceSpec], routing: Mapping[str, ModelRouting] | None = None
    ) -> None:
        """Replace the instance set and the models' routing settings; kept instances keep their
        state (a changed url resets it)."""
        new: dict[str, InstanceRecord] = {}
        for spec in specs:
            old = self._records.get(spec.id)
            max_inflight = spec.max_inflight or self._default_max
            if old is not None and old.url == spec.url:
                old.spec = spec
                old.max_inflight = max_inflight
                new[spec.id] = old
            else:
                new[spec.id] = InstanceRecord(spec=spec, max_inflight=max_inflight, watch=self._watch)
        self._records = new
        self._routing = dict(routing or {})

    def watch(self, callback: AccountingWatch | None) -> None:
        """Tell `callback` of every change of this router's accounting, on every record."""
        self._watch = callback
        for record in self._records.values():
            record.watch = callback

    def all(self) -> list[InstanceRecord]:
        return list(self._records.values())

    def get(self, instance_id: str) -> InstanceRecord | None:
        return self._records.get(instance_id)

    def routing(self, model: str) -> ModelRouting:
        """The model's routing settings, as discovery resolved them."""
        return self._routing.get(model, NOT_CONFIGURED)

    def slice_tokens(self, model: str) -> int:
        """The model's slice length (0: not sliced)."""
        return self.routing(model).slice_tokens or 0

    def models(self) -> set[str]:
        return {r.spec.model for r in self._records.values()}

    def routable_models(self) -> set[str]:
        return {r.spec.model for r in self._records.values() if not r.ejected}

    def routable(self, model: str) -> list[InstanceRecord]:
        return [r for r in self._records.values() if r.spec.model == model and not r.ejected]
