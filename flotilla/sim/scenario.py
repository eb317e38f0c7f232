"""What one simulated run compares: a routing set-up (policy, predictor, queue order, engine order).

The lineup is the issue's: Kubernetes' round robin, AIBrix/KubeAI's least request, AIBrix's KV
utilisation, llm-d/SGLang's prefix affinity, our predicted load (with the router's proxy predictor,
and with the learned predictor where the workload has prompt text), and an oracle that knows every
request's true output length. The oracle is the strongest set-up of these mechanisms with perfect
knowledge: the router's `predicted_load` policy (global minimum, no sampling) fed true lengths, the
router queue ordered shortest-first by true length, and engines that admit shortest-first. Its
engines preempt the most recently admitted request, as FCFS vLLM does: preempting the longest one
(vLLM's priority mode) made long-context requests recompute their prompts over and over, with 2x
the preemptions and a worse mean latency at 95% load on Mooncake. It shows what a perfect length
predictor could buy; it is not a proof of optimality.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flotilla.router.batch_target import BatchTargetParams
from flotilla.router.queue_orders import default_queue_orders


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    policy: str
    params: dict[str, Any] = Field(default_factory=dict)
    predictor: Literal["proxy", "learned", "oracle"] = "proxy"
    """Output-length predictions the router charges: the router's ProxyPredictor, the learned
    predictor's shipped `artifact` (needs prompt text), or true lengths."""
    artifact: str = "llama-3.1-8b-v1"
    queue: str = "fcfs"
    """Router queue order, a name in the router's registry (`flotilla.router.queue_orders`):
    `fcfs` (this field's default, as the earlier benchmarks ran; the router's is
    `shortest_work_first`), `shortest_predicted_first`, `least_attained_service`."""
    queue_params: dict[str, Any] = Field(default_factory=dict)
    """Params of the queue order, validated by its model."""
    engine_priority: bool = False
    """Engines admit waiting requests by priority = predicted length instead of in arrival order."""
    preempt_lowest_priority: bool = False
    """With engine_priority: preempt the lowest-priority running request (vLLM's priority mode)
    rather than the most recently admitted one (vLLM's FCFS mode)."""
    slice_tokens: int = Field(default=0, ge=0)
    """Slice length S of slice-level scheduling (`spec.router.sliceTokens`); 0: whole requests."""
    slice_rebalance: dict[str, Any] = Field(default_factory=dict)
    """`flotilla.router.slicing.decisions.RebalanceParams`: when a continuation slice moves elsewhere."""
    kv_usage_limit: float | None = Field(default=None, gt=0, le=1)
    """The router's memory-aware admission (`flotilla.router.memory`); None: off (the earlier
    benchmarks' set-up; the router's default is 0.9 since benchmarks/backlog)."""
    batch_target: BatchTargetParams | None = None
    """The router's target batch from a step-time profile (`flotilla.router.batch_target`); None: off."""

    @model_validator(mode="after")
    def _queue_order_exists(self) -> Scenario:
        default_queue_orders().factory(self.queue, self.queue_params)  # raises on a bad name or params
        return self


def default_lineup() -> list[Scenario]:
    return [
        Scenario(name="round_robin", policy="round_robin"),
        Scenario(name="least_request", policy="least_request"),
        Scenario(name="kv_utilization", policy="kv_utilization"),
        Scenario(name="prefix_affinity", policy="prefix_affinity"),
        Scenario(name="predicted_load", policy="predicted_load"),
        Scenario(name="predicted_load_learned", policy="predicted_load", predictor="learned"),
        Scenario(name="least_work", policy="least_work"),
        Scenario(name="least_work_prefix", policy="least_work", params={"prefix_match": True}),
        Scenario(
            name="oracle_srf",
            policy="predicted_load",
            params={"choices": 0},
            predictor="oracle",
            queue="shortest_predicted_first",
            engine_priority=True,
        ),
    ]
