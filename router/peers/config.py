"""`peers:` in the router's configuration: where the replicas share their routing state."""

from __future__ import annotations

import os
import socket
import uuid

from pydantic import BaseModel, ConfigDict, Field


def default_replica_id() -> str:
    """The pod's name (the chart sets POD_NAME), else host and a random suffix: unique per process."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


class PeersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^(nats|tls)://", description="the NATS server, e.g. nats://flotilla-nats:4222")
    token_file: str | None = None
    """A file holding the NATS auth token (a mounted Secret); None: no auth."""
    subject_prefix: str = Field(default="flotilla.router", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    """Subjects used: `<prefix>.load`, `.placed`, `.charge`; routers of different installs must
    not share a prefix."""
    replica: str = Field(default_factory=default_replica_id, min_length=1)
    flush_ms: float = Field(default=50.0, gt=0)
    """Longest the per-token progress of predicted tokens waits before it is sent; a request's
    start, end and first token go at once. Progress changes on every streamed token: sending it
    coalesced keeps the message rate per replica at most 1000/flush_ms a second."""
    heartbeat_s: float = Field(default=1.0, gt=0)
    """Full state this often (repairs anything lost, and says the replica is alive)."""
    expire_s: float = Field(default=3.0, gt=0)
    """A peer silent this long is forgotten (crashed, partitioned)."""
    connect_timeout_s: float = Field(default=1.0, gt=0)
    reconnect_wait_s: float = Field(default=0.5, gt=0)
