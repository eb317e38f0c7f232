"""The target batch from the step-time profile, and the dispatch decision that holds it."""

import random

import pytest
from pydantic import ValidationError

from flotilla.profiles import load_profile
from flotilla.router.batch_target import BatchTarget, BatchTargetParams, within_target
from flotilla.router.dispatch import choose
from flotilla.router.instances import InstanceRecord, InstanceSpec
from flotilla.router.policies import InstanceView, LeastRequest, RequestFeatures

PROFILE = "h100-llama3-8b"


def target(**params: float | None) -> BatchTarget:
    return BatchTarget.from_params(BatchTargetParams(profile=PROFILE, **params))  # type: ignore[arg-type]


def test_the_target_shrinks_as_contexts_grow_and_stays_within_the_slowdown() -> None:
    t = target(max_decode_slowdown=2.0)
    sizes = [t.target_batch(ctx) for ctx in (300, 1000, 10_000)]
    assert sizes[0] > sizes[1] > sizes[2] > 1
    for ctx, b in zip((300, 1000, 10_000), sizes, strict=True):
        one = t.decode_step_s(1, ctx)
        assert t.decode_step_s(b, ctx) <= 2.0 * one < t.decode_step_s(b + 1, ctx)
    # From the profile's own coefficients: per-sequence cost at 10k context ~ base cost / 12.
    c = load_profile(PROFILE).coefficients
    per_seq = c.decode_seq_s + c.kv_token_s * 10_000
    assert sizes[2] == pytest.approx((c.base_s + per_seq) / per_seq, abs=1.5)


def test_a_tpot_target_binds_when_tighter() -> None:
    loose, tight = target(tpot_ms=1000.0), target(tpot_ms=10.0)
    assert tight.target_batch(1000) < loose.target_batch(1000)
    assert tight.decode_step_s(tight.target_batch(1000), 1000) <= 0.010


def view(inflight: int, context: int, est: float | None = None, name: str = "a") -> InstanceView:
    return InstanceView(
        id=name,
        inflight=inflight,
        inflight_tokens=inflight * (context + 100),
        context_tokens=float(inflight * context),
        est_requests=float(inflight if est is None else est),
    )


def test_fits_counts_every_routers_requests_and_the_requests_own_tpot() -> None:
    t = target(max_decode_slowdown=2.0)
    b = t.target_batch(1000)
    req = RequestFeatures(model="m", prompt_tokens=1000)
    assert t.fits(view(b - 1, 1000), req)
    assert not t.fits(view(b, 1000), req)
    assert not t.fits(view(2, 1000, est=b + 5), req)  # other routers' requests count
    assert t.fits(view(0, 1000), req)  # a lone request always runs
    strict = RequestFeatures(model="m", prompt_tokens=1000, tpot_slo_s=t.decode_step_s(4, 1000))
    assert t.fits(view(3, 1000), strict) and not t.fits(view(4, 1000), strict)


def test_within_target_waits_only_for_our_own_requests() -> None:
    t = target(max_decode_slowdown=2.0)
    req = RequestFeatures(model="m", prompt_tokens=1000)
    full = view(t.target_batch(1000), 1000)
    assert within_target([full, view(1, 1000, name="b")], req, t) == [view(1, 1000, name="b")]
    assert within_target([full], req, t) is None  # ours will finish: wait
    crowded = view(0, 1000, est=500)
    assert within_target([crowded], req, t) == [crowded]  # nothing of ours to wait for


def test_dispatch_holds_the_batch_at_the_target() -> None:
    t = target(max_decode_slowdown=2.0)
    b = t.target_batch(2000)
    record = InstanceRecord(spec=InstanceSpec(id="a", url="http://a", model="m"), max_inflight=256)
    req = RequestFeatures(model="m", prompt_tokens=2000)
    placed = 0
    while choose(
        req, [record], LeastRequest(LeastRequest.Params()), random.Random(0), predicted=0.0, batch_target=t
    ):
        record.inflight += 1
        record.inflight_tokens += 2000
        placed += 1
    assert placed == b


def test_bad_params_fail_when_the_config_is_read() -> None:
    with pytest.raises(ValidationError, match="no step-time profile named 'h200-imaginary'"):
        BatchTargetParams(profile="h200-imaginary")
    with pytest.raises(ValidationError, match="needs max_decode_slowdown or tpot_ms"):
        BatchTargetParams(profile=PROFILE, max_decode_slowdown=None)
    with pytest.raises(ValidationError):
        BatchTargetParams(profile=PROFILE, max_decode_slowdown=0.5)
