from flotilla.router.hints import Hints, read_hints
from flotilla.router.policies import RequestFeatures


def test_headers_win_over_the_body_and_targets_are_in_seconds() -> None:
    body = {"nvext": {"agent_hints": {"osl": 50, "priority": 1, "speculative_prefill": True}}}
    hints = read_hints(
        {"x-expected-output-tokens": "7", "x-slo-ttft-ms": "250", "x-slo-tpot-ms": "40.5"}, body
    )
    assert hints == Hints(output_tokens=7.0, priority=1, ttft_slo_s=0.25, tpot_slo_s=0.0405)
    assert read_hints({}, {}) == Hints()
    assert read_hints({"x-request-priority": "-3"}, {}).priority == -3


def test_the_estimate_is_capped_by_max_tokens_and_the_features_carry_the_rest() -> None:
    hints = Hints(output_tokens=900.0, priority=2, ttft_slo_s=0.5)
    capped = RequestFeatures(model="m", prompt_tokens=10, max_tokens=64)
    assert hints.estimate(capped) == 64.0
    assert hints.estimate(RequestFeatures(model="m", prompt_tokens=10)) == 900.0
    assert Hints().estimate(capped) is None
    applied = hints.apply(capped)
    assert (applied.priority, applied.ttft_slo_s, applied.tpot_slo_s) == (2, 0.5, None)
