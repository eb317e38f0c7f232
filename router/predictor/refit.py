"""Refit with acceptance: a new head replaces the old only if it ranks recent traffic no worse.

The log is split by time: the newest `holdout_fraction` is the exam, everything before it the
training set, so the comparison is on traffic neither head was fitted on and as close as possible
to what comes next. Both heads are scored with the same batched tau (batches of 32, as offline).
An accepted head is recalibrated on the whole log (p50/p90 in the fleet's own lengths) and gets
the next version number.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flotilla.router.predictor import metrics
from flotilla.router.predictor.artifact import HeadSpec
from flotilla.router.predictor.calibration import LengthCalibration
from flotilla.router.predictor.feature_log import LogSnapshot
from flotilla.router.predictor.heads import HeadLoss, fit_linear_head


class RefitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loss: HeadLoss = "listmle"
    holdout_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    min_train: int = Field(256, ge=32)
    min_holdout: int = Field(128, ge=32)
    epochs: int = Field(30, ge=1)
    seed: int = 0


class RefitOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    accepted: bool
    reason: str
    old_tau: float | None = None
    new_tau: float | None = None
    n_train: int = 0
    n_holdout: int = 0
    head: HeadSpec


def refit(current: HeadSpec, log: LogSnapshot, params: RefitParams | None = None) -> RefitOutcome:
    """Returns the head to use next (the current one when the new one is rejected)."""
    p = params or RefitParams()
    n = len(log)
    n_hold = round(n * p.holdout_fraction)
    n_train = n - n_hold
    if n_train < p.min_train or n_hold < p.min_holdout:
        return RefitOutcome(
            accepted=False,
            reason=f"too little traffic: {n_train} train / {n_hold} held out "
            f"(need {p.min_train} / {p.min_holdout})",
            n_train=n_train,
            n_holdout=n_hold,
            head=current,
        )
    z_train, y_train = log.features[:n_train], log.output_tokens[:n_train]
    z_hold, y_hold = log.features[n_train:], log.output_tokens[n_train:]
    w_old = np.asarray(current.weights)
    w_new, b_new = fit_linear_head(
        z_train, y_train, p.loss, init=(w_old, current.bias), epochs=p.epochs, seed=p.seed
    )
    old_tau = metrics.batched_tau(z_hold @ w_old + current.bias, y_hold, seed=p.seed)
    new_tau = metrics.batched_tau(z_hold @ w_new + b_new, y_hold, seed=p.seed)
    common = {"old_tau": old_tau, "new_tau": new_tau, "n_train": n_train, "n_holdout": n_hold}
    if not new_tau >= old_tau:
        return RefitOutcome(
            accepted=False, reason="new head ranks recent traffic worse", head=current, **common
        )
    scores = log.features @ w_new + b_new
    head = HeadSpec(
        kind=f"{p.loss} (refit)",
        version=current.version + 1,
        weights=[float(x) for x in w_new],
        bias=b_new,
        calibration=LengthCalibration.fit(scores, [[int(x)] for x in log.output_tokens]),
        trained_on=f"feature log, {n_train} requests",
        metrics={"holdout_tau_old": old_tau, "holdout_tau_new": new_tau},
    )
    return RefitOutcome(accepted=True, reason="new head ranks recent traffic no worse", head=head, **common)
