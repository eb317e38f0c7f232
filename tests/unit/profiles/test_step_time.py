"""The step-time formula, and that the compute-knee term leaves older profiles unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla.profiles import StepCoefficients, StepTimeProfile


def make(**coefficients: Any) -> StepTimeProfile:
    return StepTimeProfile(
        name="t",
        model="m",
        hardware="h",
        source="test",
        coefficients=StepCoefficients(**coefficients),
    )


LINEAR = {
    "base_s": 0.005,
    "prefill_token_s": 1e-5,
    "prefill_attn_s": 1e-9,
    "decode_seq_s": 2e-5,
    "kv_token_s": 5e-8,
}


def test_a_profile_without_the_knee_fields_keeps_the_linear_formula() -> None:
    p = make(**LINEAR)
    assert p.coefficients.compute_token_s == 0 and p.coefficients.compute_knee_tokens == 0
    t = p.step_time(prefill_tokens=300, prefill_attention_pairs=90_000, decode_seqs=40, kv_tokens_read=80_000)
    assert t == pytest.approx(0.005 + 300e-5 + 90_000e-9 + 40 * 2e-5 + 80_000 * 5e-8)


def test_tokens_past_the_knee_cost_compute_token_s_each() -> None:
    p = make(**LINEAR, compute_token_s=1e-5, compute_knee_tokens=200)
    linear = make(**LINEAR)
    # prefill tokens and decodes both count towards the knee
    below = {"prefill_tokens": 150, "decode_seqs": 50}
    above = {"prefill_tokens": 250, "decode_seqs": 50}
    assert p.step_time(**below) == pytest.approx(linear.step_time(**below))
    assert p.step_time(**above) == pytest.approx(linear.step_time(**above) + 100 * 1e-5)


def test_an_empty_step_takes_no_time_even_with_a_knee() -> None:
    assert make(**LINEAR, compute_token_s=1e-5, compute_knee_tokens=0).step_time() == 0.0
