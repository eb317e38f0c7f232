"""The replicas' shared state, without the network: messages, each peer's loads, expiry, the view."""

import pytest

from flotilla.router.instances import EngineSample, InstanceRecord, InstanceSpec, PeerLoad
from flotilla.router.peers.state import (
    BadMessage,
    ChargeMessage,
    LoadMessage,
    PeerLoads,
    PlacedMessage,
    decode_charge,
    decode_load,
    decode_placed,
)


def test_messages_round_trip_and_foreign_ones_are_refused() -> None:
    load = LoadMessage("r1", {"a": PeerLoad(2, 300, 40.5, 100)}, kind="dispatch", changed_at=12.5)
    assert decode_load(load.encode()) == load
    placed = PlacedMessage("r1", "m", "a", 900, (1, 2, 3))
    assert decode_placed(placed.encode()) == placed
    charge = ChargeMessage("r1", "team", -12.0)
    assert decode_charge(charge.encode()) == charge
    for raw in (
        b"not json",
        b"[]",
        b'{"r": 3}',
        b'{"r": "x", "i": {"a": [1]}, "k": "dispatch", "c": 0}',
        b'{"r": "x", "i": {}, "k": "gossip", "c": 0}',
    ):
        with pytest.raises(BadMessage):
            decode_load(raw)


def test_peer_loads_are_absolute_a_heartbeat_replaces_and_silence_expires() -> None:
    peers = PeerLoads(expire_s=3.0)
    assert peers.update(
        LoadMessage("r1", {"a": PeerLoad(2, 20), "b": PeerLoad(1, 10)}, "dispatch", 0), now=0
    ) == {
        "a",
        "b",
    }
    peers.update(LoadMessage("r2", {"a": PeerLoad(5, 50)}, "dispatch", 0), now=1)
    peers.update(LoadMessage("r1", {"a": PeerLoad(3, 30)}, "dispatch", 0), now=1)  # overwrites, not adds
    assert peers.total("a") == PeerLoad(8, 80) and peers.total("b") == PeerLoad(1, 10)
    # r1's heartbeat lists only "a": its requests on "b" are done.
    assert peers.update(LoadMessage("r1", {"a": PeerLoad(3, 30)}, "heartbeat", 0), now=2) == {"a", "b"}
    assert peers.total("b") == PeerLoad()
    assert peers.expire(now=4.5) == {"a"} and peers.peers() == ["r1"]  # r2 silent since t=1, r1 since 2
    assert peers.forget_all() == {"a"} and peers.total("a") == PeerLoad()


def test_the_view_counts_peers_requests_since_the_scrape_once() -> None:
    rec = InstanceRecord(spec=InstanceSpec(id="a", url="http://a", model="m"), max_inflight=8)
    rec.inflight, rec.inflight_tokens = 2, 200
    rec.peer = PeerLoad(inflight=3, tokens=300, predicted=30.0, prefill=100)
    rec.record_sample(EngineSample(running=6, waiting=0, kv_usage=0.4, kv_capacity_tokens=1000))
    v = rec.view()
    assert (v.est_requests, v.peer_inflight, v.predicted_remaining_tokens, v.pending_prefill_tokens) == (
        6,
        3,
        30.0,
        100,
    )
    rec.peer = PeerLoad(inflight=7, tokens=700)  # peers sent 4 more since the scrape
    # 0.4 scraped + 400 tokens sent since + the peers' 100 prompt tokens waiting at the scrape.
    assert rec.view().est_requests == 10 and rec.view().est_kv_usage == pytest.approx(0.9)
    rec.sample = None
    assert rec.view().est_requests == 9  # no scrape: every replica's requests it knows of


def test_every_accounting_change_is_told_to_the_watch() -> None:
    told: list[tuple[str, bool]] = []
    rec = InstanceRecord(
        spec=InstanceSpec(id="a", url="http://a", model="m"),
        max_inflight=8,
        watch=lambda r, n: told.append((r.id, n)),
    )
    rec.inflight += 1
    rec.predicted_remaining += 5.0
    rec.failures += 1  # not accounting
    assert told == [("a", True), ("a", False)]  # progress of the prediction is not urgent
