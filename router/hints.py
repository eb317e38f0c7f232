"""What a client may tell the router about its request, in the headers and fields clients already send.

- an output-length estimate: the `x-expected-output-tokens` header, or NVIDIA Dynamo's
  `nvext.agent_hints.osl` body field. It replaces the length predictor's estimate (capped by
  `max_tokens`): the client knows its task (a classifier answers in one token, a summary in about
  200), and a learned predictor only guesses from the prompt.
- a priority: the `x-request-priority` header, or Dynamo's `nvext.agent_hints.priority`; an integer,
  higher first, as Dynamo's and Kubernetes' priorities. It is a strict tier of the router's queue
  (`wait_queue`): a waiting request of a higher priority leaves before any lower one, which still
  goes first once it has waited the order's `starvation_s`.
- a TTFT target: `x-slo-ttft-ms`. The request falls due in the router's queue when the target, less
  the expected prefill of its prompt, has run out, and then leaves before anything not yet due.
- a TPOT target: `x-slo-tpot-ms`. With the router's batch target on (`batch_target.py`), the request
  goes only to an instance whose decode step, with it added, is estimated within the target.

A malformed hint is the client's error: 400, naming the header or field, never a silent default.
The body is forwarded unchanged (vLLM ignores the fields it does not know, as `nvext`); the router's
configuration can ignore every hint (`client_hints: false`) where clients are not trusted with them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from flotilla.router.errors import ApiError
from flotilla.router.policies.base import RequestFeatures

OUTPUT_TOKENS_HEADER = "x-expected-output-tokens"
PRIORITY_HEADER = "x-request-priority"
TTFT_HEADER = "x-slo-ttft-ms"
TPOT_HEADER = "x-slo-tpot-ms"
MAX_PRIORITY = 1_000_000
"""Priorities beyond +-this are refused: a tier is an integer key, not a place for timestamps."""


@dataclass(frozen=True, slots=True)
class Hints:
    output_tokens: float | None = None
    priority: int = 0
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None

    def apply(self, features: RequestFeatures) -> RequestFeatures:
        """The request's features with the hints' priority and targets (the output estimate is the
        predictor seam's: `estimate`)."""
        return replace(
            features, priority=self.priority, ttft_slo_s=self.ttft_slo_s, tpot_slo_s=self.tpot_slo_s
        )

    def estimate(self, features: RequestFeatures) -> float | None:
        """The client's output estimate, capped by the request's max_tokens; None without one."""
        if self.output_tokens is None:
            return None
        cap = features.max_tokens if features.max_tokens is not None else math.inf
        return float(max(1.0, min(self.output_tokens, cap)))


def _number(raw: Any, where: str, param: str, *, integer: bool, positive: bool) -> float:
    value: Any = raw
    if isinstance(raw, str):
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            value = None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and positive:
        ok = value > 0
    if not ok:
        kind = "integer" if integer else "number"
        sign = "a positive " if positive else "an "
        raise ApiError(400, f"{where} must be {sign}{kind}, got {raw!r}", param=param)
    return float(value)


def read_hints(headers: Mapping[str, str], body: Mapping[str, Any]) -> Hints:
    """The request's hints; raises ApiError(400) naming a malformed one. A header and a body field
    for the same hint: the header wins (a gateway in front of the router may set it)."""
    agent: Mapping[str, Any] = {}
    nvext = body.get("nvext")
    if nvext is not None:
        if not isinstance(nvext, Mapping):
            raise ApiError(400, "`nvext` must be an object", param="nvext")
        raw_agent = nvext.get("agent_hints")
        if raw_agent is not None and not isinstance(raw_agent, Mapping):
            raise ApiError(400, "`nvext.agent_hints` must be an object", param="nvext.agent_hints")
        agent = raw_agent or {}

    def pick(header: str, field: str | None) -> tuple[Any, str, str] | None:
        if header in headers:
            return headers[header], f"header `{header}`", header
        if field is not None and agent.get(field) is not None:
            return agent[field], f"`nvext.agent_hints.{field}`", f"nvext.agent_hints.{field}"
        return None

    output = pick(OUTPUT_TOKENS_HEADER, "osl")
    priority = pick(PRIORITY_HEADER, "priority")
    ttft = pick(TTFT_HEADER, None)
    tpot = pick(TPOT_HEADER, None)
    hints = Hints(
        output_tokens=None if output is None else _number(*output, integer=True, positive=True),
        priority=0 if priority is None else int(_number(*priority, integer=True, positive=False)),
        ttft_slo_s=None if ttft is None else _number(*ttft, integer=False, positive=True) / 1000.0,
        tpot_slo_s=None if tpot is None else _number(*tpot, integer=False, positive=True) / 1000.0,
    )
    if abs(hints.priority) > MAX_PRIORITY:
        assert priority is not None
        raise ApiError(400, f"{priority[1]} must be within +-{MAX_PRIORITY}", param=priority[2])
    return hints
