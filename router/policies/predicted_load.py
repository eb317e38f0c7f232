"""Predicted load: weigh instances by the output tokens still to come on them.

Two instances with the same number of requests can be minutes apart: one about to finish short
answers, the other at the start of long ones. This policy charges each instance the predicted
remaining output tokens of what it runs (from the router's accounting, which knows each request's
prediction and how many tokens it has streamed), plus a fixed charge for each request the scrape
shows beyond this router's own (other replicas' work, whose predictions it cannot see).
"""

from __future__ import annotations

import random
from typing import ClassVar

from flotilla.api.routing import PredictedLoadParams
from flotilla.router.policies.base import InstanceView, RequestFeatures, Snapshot, rank_by_cost


class PredictedLoad:
    name: ClassVar[str] = "predicted_load"
    Params = PredictedLoadParams

    def __init__(self, params: PredictedLoadParams) -> None:
        self.params = params

    def cost(self, inst: InstanceView) -> float:
        """Own predicted remaining tokens, plus requests only the scrape knows of (other routers')."""
        foreign = max(0.0, inst.est_requests - inst.inflight - inst.peer_inflight)
        return inst.predicted_remaining_tokens + foreign * self.params.foreign_request_tokens

    def rank(self, request: RequestFeatures, snapshot: Snapshot, rng: random.Random) -> list[InstanceView]:
        inst = snapshot.instances
        return rank_by_cost(inst, [self.cost(i) for i in inst], rng, self.params.choices)
