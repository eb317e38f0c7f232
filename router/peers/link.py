"""The replicas' shared routing state over NATS: publish this replica's, apply the others'.

Why NATS: the state is small, changes on every dispatch and is worth nothing a few seconds later,
so it needs fan-out at sub-millisecond latency, not storage or consensus. NATS core pub/sub is
exactly that, a single static Go binary platform teams already run (it is the CNCF messaging
project; NVIDIA Dynamo uses it between its own routers), with token auth and TLS. Redis would
do it with pub/sub too, but brings a datastore we would not use; Kubernetes objects cannot take a
write per request.

What travels (`state.py`): each replica's own accounting per instance (absolute, coalesced: a
request's start, end or first token is sent at once, the per-token progress of predicted tokens
within `flush_ms`), a full
heartbeat every `heartbeat_s`, its placements (for prefix indexes) and its rate-limit charges.
A peer silent for `expire_s` is forgotten. When the link is down (NATS gone, not yet reachable)
the peers' state is dropped at once and the router works on its own accounting and the scrapes,
as a single replica does; it reconnects in the background and republishes in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from flotilla.router.instances import NO_PEERS, InstanceRecord, InstanceTable, PeerLoad
from flotilla.router.metrics import RouterMetrics
from flotilla.router.peers.config import PeersConfig
from flotilla.router.peers.state import (
    BadMessage,
    ChargeMessage,
    LoadKind,
    LoadMessage,
    PeerLoads,
    PlacedMessage,
    decode_charge,
    decode_load,
    decode_placed,
)
from flotilla.router.policies import RequestFeatures

log = logging.getLogger("flotilla.router.peers")

Observe = Callable[[RequestFeatures, str], None]
"""Tell the model's policy of a placement another replica made (`Observer` policies learn from it)."""
Charge = Callable[[str, float], None]
"""Charge an API key's bucket for tokens another replica took."""


def own_load(record: InstanceRecord) -> PeerLoad:
    return PeerLoad(
        record.inflight, record.inflight_tokens, record.predicted_remaining, record.pending_prefill
    )


class PeerLink:
    def __init__(
        self,
        config: PeersConfig,
        table: InstanceTable,
        metrics: RouterMetrics,
        *,
        replica: str,
        observe: Observe,
        charge: Charge,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._table = table
        self._metrics = metrics
        self.replica = replica
        self._observe = observe
        self._charge = charge
        self._clock = clock
        self.peers = PeerLoads(expire_s=config.expire_s)
        self._nc: Client | None = None
        self._up = False
        self._dirty: set[str] = set()
        self._dirty_since: float | None = None
        self._flush: asyncio.Handle | None = None
        self._urgent = False
        self._sends: set[asyncio.Task[None]] = set()
        prefix = config.subject_prefix
        self._subjects = {
            "load": f"{prefix}.load",
            "placed": f"{prefix}.placed",
            "charge": f"{prefix}.charge",
        }
        metrics.peer_link_up.set(0)

    @property
    def up(self) -> bool:
        return self._up

    # -- what this replica tells the others -------------------------------------------------------

    def changed(self, record: InstanceRecord, urgent: bool) -> None:
        """This replica's accounting on `record` changed; `urgent` (a request's start, end, first
        token) goes out in this turn of the event loop, progress within `flush_ms`."""
        if not self._up:
            return
        self._dirty.add(record.id)
        if self._dirty_since is None:
            self._dirty_since = self._clock()
        if urgent and not self._urgent:
            self._urgent = True
            if self._flush is not None:
                self._flush.cancel()
            self._flush = asyncio.get_running_loop().call_soon(self._send_loads)
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(
                self._config.flush_ms / 1000.0, self._send_loads
            )

    def placed(self, features: RequestFeatures, instance: str) -> None:
        if self._up and features.prefix_hashes:
            message = PlacedMessage(
                self.replica, features.model, instance, features.prompt_tokens, features.prefix_hashes
            )
            self._publish("placed", message.encode())

    def charged(self, key: str, tokens: float) -> None:
        if self._up and tokens:
            self._publish("charge", ChargeMessage(self.replica, key, tokens).encode())

    def _send_loads(self, full: bool = False) -> None:
        kind: LoadKind = "heartbeat" if full else "dispatch" if self._urgent else "progress"
        if self._flush is not None:  # a heartbeat carries what a pending flush would have
            self._flush.cancel()
        self._flush, self._urgent = None, False
        records = {r.id: r for r in self._table.all()}
        if full:
            loads = {i: own_load(r) for i, r in records.items() if r.inflight}
        else:
            loads = {i: own_load(records[i]) if i in records else NO_PEERS for i in self._dirty}
        changed_at = self._dirty_since if self._dirty_since is not None else self._clock()
        self._dirty.clear()
        self._dirty_since = None
        if self._up and (loads or full):
            self._publish("load", LoadMessage(self.replica, loads, kind, changed_at).encode())

    def _publish(self, kind: str, data: bytes) -> None:
        nc = self._nc
        if nc is None:
            return
        task = asyncio.get_running_loop().create_task(self._send(nc, self._subjects[kind], data))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, nc: Client, subject: str, data: bytes) -> None:
        try:
            await nc.publish(subject, data)
        except Exception as e:
            log.debug("peer publish failed", extra={"error": repr(e)})

    # -- what the others tell this replica --------------------------------------------------------

    async def _on_load(self, msg: Msg) -> None:
        try:
            message = decode_load(msg.data)
        except BadMessage as e:
            self._metrics.peer_bad_messages.inc()
            log.debug("bad peer message", extra={"error": str(e)})
            return
        now = self._clock()
        if message.replica == self.replica:  # our own, echoed: how stale a peer's view of us is
            self._metrics.peer_staleness.labels(message.kind).observe(max(0.0, now - message.changed_at))
            return
        self._apply(self.peers.update(message, now))

    async def _on_placed(self, msg: Msg) -> None:
        try:
            message = decode_placed(msg.data)
        except BadMessage:
            self._metrics.peer_bad_messages.inc()
            return
        if message.replica == self.replica:
            return
        features = RequestFeatures(
            model=message.model, prompt_tokens=message.prompt_tokens, prefix_hashes=message.prefix_hashes
        )
        self._observe(features, message.instance)

    async def _on_charge(self, msg: Msg) -> None:
        try:
            message = decode_charge(msg.data)
        except BadMessage:
            self._metrics.peer_bad_messages.inc()
            return
        if message.replica != self.replica:
            self._charge(message.key, message.tokens)

    def _apply(self, instances: set[str]) -> None:
        for instance in instances:
            record = self._table.get(instance)
            if record is not None:
                record.peer = self.peers.total(instance)
        self._metrics.peers.set(len(self.peers.peers()))

    # -- the connection ---------------------------------------------------------------------------

    async def _disconnected(self) -> None:
        if self._up:
            log.warning(
                "shared state lost: routing on this replica's own view", extra={"url": self._config.url}
            )
        self._up = False
        self._metrics.peer_link_up.set(0)
        self._apply(self.peers.forget_all())

    async def _reconnected(self) -> None:
        log.info("shared state back", extra={"url": self._config.url})
        self._up = True
        self._metrics.peer_link_up.set(1)
        self._send_loads(full=True)

    async def _connect(self) -> Client:
        options: dict[str, Any] = {
            "name": f"flotilla-router-{self.replica}",
            "connect_timeout": self._config.connect_timeout_s,
            "reconnect_time_wait": self._config.reconnect_wait_s,
            "max_reconnect_attempts": -1,
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "error_cb": self._error,
        }
        if self._config.token_file:
            token = await asyncio.to_thread(Path(self._config.token_file).read_text)
            options["token"] = token.strip()
        return await nats.connect(self._config.url, **options)

    async def _error(self, e: Exception) -> None:
        log.debug("nats error", extra={"error": repr(e)})

    async def run(self) -> None:
        """Connect (retrying until it can), subscribe, heartbeat and expire; until cancelled."""
        try:
            while self._nc is None:
                try:
                    nc = await self._connect()
                except Exception as e:
                    log.warning("shared state unreachable", extra={"url": self._config.url, "error": repr(e)})
                    await asyncio.sleep(self._config.reconnect_wait_s)
                    continue
                await nc.subscribe(self._subjects["load"], cb=self._on_load)
                await nc.subscribe(self._subjects["placed"], cb=self._on_placed)
                await nc.subscribe(self._subjects["charge"], cb=self._on_charge)
                self._nc = nc
                await self._reconnected()
            while True:
                await asyncio.sleep(self._config.heartbeat_s)
                if self._up:
                    self._send_loads(full=True)
                self._apply(self.peers.expire(self._clock()))
        finally:
            await self.close()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._up = False
        if self._flush is not None:
            self._flush.cancel()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
