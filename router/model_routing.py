"""How the router handles one model's requests, resolved once per model by discovery: from the
fleet's `spec.router` in a cluster, from the configuration's `models:` entry with static discovery."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelRouting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    policy: str | None = None
    """Balancing policy; None: the router's `default_policy`."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The policy's params, checked by its own model when the router builds it."""
    predictor: str | None = None
    """Length predictor artifact (`<name>` or `<name>-v<N>`), as a fleet's spec.router.predictor.name."""
    slice_tokens: int | None = Field(default=None, ge=0)
    """Slice length S for slice-level scheduling (None or 0: whole requests), as spec.router.sliceTokens."""


NOT_CONFIGURED = ModelRouting()
"""A model with no routing settings: the router's default policy, no predictor, not sliced."""
