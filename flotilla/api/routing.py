"""The router's balancing policies as the API knows them: each name with the model of its params.

This is the plug-in contract shared by the components that cannot import one another: the CRD
refuses a policy name not listed here (an enum on `spec.router.policy`), the operator checks
`spec.router.params` against the named model and reports a refusal on the fleet (condition and
Event), and the router builds each policy from the same model. A new policy plug-in adds its name
and params model here and registers its class in `flotilla.router.policies`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PolicyName = Literal[
    "round_robin", "least_request", "kv_utilization", "prefix_affinity", "predicted_load", "least_work"
]
DEFAULT_POLICY: Final[PolicyName] = "least_request"
"""What a fleet without `spec.router.policy` gets, unless the router is configured otherwise."""

# The default weights of least_work come from the H100 Llama-3.1-8B step profile (see
# flotilla.router.policies.least_work; a unit test recomputes them from the profile).
DEFAULT_PREFILL_TOKEN_S: Final = 2.1015e-5
DEFAULT_DECODE_TOKEN_S: Final = 1.196e-4
DECODE_CONTEXT_TOKENS: Final = 2048
"""The context length the default decode weight assumes (KV read per decode step)."""


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChoiceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    choices: int = Field(default=2, ge=0, description="power of d choices; 0 picks the global best")


class KvUtilizationParams(ChoiceParams):
    waiting_weight: float = Field(
        default=0.05, ge=0, description="cost of one queued request, in KV fraction"
    )


class PrefixAffinityParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    load_factor: float = Field(default=1.25, gt=1.0, description="c in 'load <= c x mean load'")
    min_match_blocks: int = Field(
        default=4, ge=1, description="shortest match (prefix blocks) that attracts the request"
    )
    min_match_fraction: float = Field(
        default=0.5, ge=0.0, le=1.0, description="shortest match, as a fraction of the hashed prompt blocks"
    )
    index_blocks: int = Field(
        default=8192, ge=1, description="prefix block hashes remembered per instance (LRU)"
    )
    max_instances: int = Field(default=4096, ge=1, description="instances the index remembers")


class PredictedLoadParams(ChoiceParams):
    foreign_request_tokens: float = Field(
        default=128.0, ge=0, description="tokens charged per request seen only in the scrape (other routers')"
    )


class LeastWorkParams(ChoiceParams):
    choices: int = Field(
        default=0, ge=0, description="power of d choices; 0 (default) picks the least work of all"
    )
    prefill_token_s: float = Field(
        default=DEFAULT_PREFILL_TOKEN_S, ge=0, description="engine seconds per prompt token to prefill"
    )
    decode_token_s: float = Field(
        default=DEFAULT_DECODE_TOKEN_S, ge=0, description="engine seconds per output token still to decode"
    )
    foreign_request_tokens: float = Field(
        default=128.0, ge=0, description="output tokens charged per request seen only in the scrape"
    )
    prefix_match: bool = Field(
        default=False, description="credit an instance with the prefill its cached prefix saves"
    )
    index_blocks: int = Field(default=8192, ge=1, description="prefix blocks remembered per instance")
    max_instances: int = Field(default=4096, ge=1, description="instances the prefix index remembers")


POLICY_PARAMS: Final[Mapping[str, type[BaseModel]]] = {
    "round_robin": NoParams,
    "least_request": ChoiceParams,
    "kv_utilization": KvUtilizationParams,
    "prefix_affinity": PrefixAffinityParams,
    "predicted_load": PredictedLoadParams,
    "least_work": LeastWorkParams,
}
POLICY_NAMES: Final[tuple[PolicyName, ...]] = get_args(PolicyName)


def params_problem(policy: str, params: Mapping[str, Any] | None) -> str | None:
    """Why `params` cannot configure `policy` (None when they can), naming each bad key:
    "choices: Input should be greater than or equal to 0". An unknown name is the CRD's to refuse;
    it is reported here too, for a fleet stored under an older CRD."""
    model = POLICY_PARAMS.get(policy)
    if model is None:
        return f"unknown policy {policy!r}; known: {', '.join(POLICY_NAMES)}"
    try:
        model.model_validate(dict(params or {}))
    except ValidationError as e:
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(params)'}: {err['msg']}" for err in e.errors()
        )
    return None
