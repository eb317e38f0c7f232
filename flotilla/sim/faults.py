"""Faults the fleet simulator can inject: an engine dies, an engine leaves, an engine joins.

The live counterparts are the chaos tests (`e2e/chaos`): a killed engine process, a scaled-down or
scaled-up fleet. Here they are events at a virtual time, so their effect on latency can be measured
at fleet scale and replayed exactly:

- `kill`: the engine dies at `at`; the router ejects it at once (the live router ejects an instance
  on its first connection error). Its requests in flight, running or queued in the engine, are lost
  without slicing (their streams had started, or their engine took them: the client sees an error);
  with slicing each continues on another instance from its last streamed token
  (`flotilla.router.slicing.continuation` does exactly that), re-prefilling its context there.
- `remove`: the engine is drained (scale down): no new requests, the ones it holds finish.
- `add`: the engine is not routable before `at` (scale up: it joins the fleet then, empty); after
  a `remove` of the same engine, it is routable again from `at`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["kill", "remove", "add"]
    instance: int = Field(ge=0)
    at: float = Field(ge=0, description="seconds from the start of the run")
