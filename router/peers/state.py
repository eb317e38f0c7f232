"""What the other router replicas published, and the messages they publish it in. Pure: no I/O.

Three kinds of message, each a small JSON object (orjson) with the sender's replica id `r`:

- `load`: the sender's own accounting on the instances that changed (`i`: id -> [in flight,
  tokens, predicted tokens to come, prompt tokens not yet prefilled]), or on every instance it has
  requests on (its heartbeat); `k` says which (`LoadKind`). Absolute values, not deltas: a lost
  or repeated message leaves no error behind, the next one overwrites it. `c` is when the oldest
  change it carries was made, on the sender's monotonic clock: the sender reads its own messages
  back (NATS echoes them) and measures the staleness `now - c` a peer sees.
- `placed`: a request went to an instance, with its prompt's block hashes (`h`), so that every
  replica's prefix index (`prefix_affinity`, any `Observer` policy) learns the placement.
- `charge`: tokens taken from (or, negative, given back to) an API key's token bucket, so that a
  key's limit holds across replicas, not per replica.

`PeerLoads` keeps each peer's last published loads and forgets a peer that has been silent for
`expire_s` (it crashed, or the link is down: its requests are no longer known, and the router is
back to its own accounting plus the scrape, as without shared state).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from flotilla.router.instances import NO_PEERS, PeerLoad


class BadMessage(ValueError):
    """A message that is not one of ours (another version, another sender on the subject)."""


LoadKind = Literal["dispatch", "progress", "heartbeat"]
"""What made a replica send its loads: a request started, ended or streamed its first token
(`dispatch`: sent in the same turn of the event loop), predicted tokens streamed (`progress`:
coalesced over `flush_ms`), or the periodic full state (`heartbeat`)."""


@dataclass(frozen=True, slots=True)
class LoadMessage:
    replica: str
    loads: Mapping[str, PeerLoad]
    kind: LoadKind
    changed_at: float

    @property
    def full(self) -> bool:
        return self.kind == "heartbeat"

    def encode(self) -> bytes:
        loads = {k: [v.inflight, v.tokens, v.predicted, v.prefill] for k, v in self.loads.items()}
        return orjson.dumps({"r": self.replica, "k": self.kind, "c": self.changed_at, "i": loads})


@dataclass(frozen=True, slots=True)
class PlacedMessage:
    replica: str
    model: str
    instance: str
    prompt_tokens: int
    prefix_hashes: tuple[int, ...]

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "r": self.replica,
                "m": self.model,
                "i": self.instance,
                "p": self.prompt_tokens,
                "h": self.prefix_hashes,
            }
        )


@dataclass(frozen=True, slots=True)
class ChargeMessage:
    replica: str
    key: str
    tokens: float

    def encode(self) -> bytes:
        return orjson.dumps({"r": self.replica, "k": self.key, "n": self.tokens})


def _object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadMessage(f"not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("r"), str):
        raise BadMessage("not an object with a replica id")
    return data


def decode_load(raw: bytes) -> LoadMessage:
    d = _object(raw)
    try:
        loads = {
            str(k): PeerLoad(int(v[0]), int(v[1]), float(v[2]), int(v[3])) for k, v in dict(d["i"]).items()
        }
        kind = d["k"]
        if kind not in ("dispatch", "progress", "heartbeat"):
            raise ValueError(f"unknown kind {kind!r}")
        return LoadMessage(d["r"], loads, kind, float(d["c"]))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise BadMessage(f"bad load message: {e!r}") from None


def decode_placed(raw: bytes) -> PlacedMessage:
    d = _object(raw)
    try:
        return PlacedMessage(d["r"], str(d["m"]), str(d["i"]), int(d["p"]), tuple(int(h) for h in d["h"]))
    except (KeyError, TypeError, ValueError) as e:
        raise BadMessage(f"bad placement message: {e!r}") from None


def decode_charge(raw: bytes) -> ChargeMessage:
    d = _object(raw)
    try:
        return ChargeMessage(d["r"], str(d["k"]), float(d["n"]))
    except (KeyError, TypeError, ValueError) as e:
        raise BadMessage(f"bad charge message: {e!r}") from None


class PeerLoads:
    """Each peer's last published loads, and their sum per instance."""

    def __init__(self, *, expire_s: float) -> None:
        self._expire = expire_s
        self._loads: dict[str, dict[str, PeerLoad]] = {}
        self._seen: dict[str, float] = {}

    def peers(self) -> list[str]:
        return sorted(self._loads)

    def update(self, message: LoadMessage, now: float) -> set[str]:
        """Apply a peer's message; returns the instances whose peer total changed."""
        mine = self._loads.setdefault(message.replica, {})
        self._seen[message.replica] = now
        changed = set(message.loads)
        if message.full:  # a heartbeat lists every instance it has requests on: the rest are idle
            changed |= set(mine) - set(message.loads)
            mine.clear()
        for instance, load in message.loads.items():
            if load == NO_PEERS:
                mine.pop(instance, None)
            else:
                mine[instance] = load
        return changed

    def expire(self, now: float) -> set[str]:
        """Forget peers silent for `expire_s`; returns the instances their loads were on."""
        changed: set[str] = set()
        for replica, seen in list(self._seen.items()):
            if now - seen >= self._expire:
                changed |= set(self._loads.pop(replica, {}))
                del self._seen[replica]
        return changed

    def forget_all(self) -> set[str]:
        """The link is down: nothing a peer published can be trusted to stay current."""
        changed = {i for loads in self._loads.values() for i in loads}
        self._loads.clear()
        self._seen.clear()
        return changed

    def total(self, instance: str) -> PeerLoad:
        out = NO_PEERS
        for loads in self._loads.values():
            load = loads.get(instance)
            if load is not None:
                out = out + load
        return out
