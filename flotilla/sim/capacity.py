"""How many requests per second one engine can serve on a workload.

The load axis of every comparison is a fraction of the capacity, so it must not depend on the
policy being compared. Two numbers: `measured_capacity` (what the comparisons use) overloads the
simulated fleet and counts completions; `instance_capacity` is the analytic estimate from the
profile alone, used to pick the overload rate and as a cross-check. The analytic estimate assumes
a saturated engine: decode batches as large as `max_num_seqs` and the KV cache allow (a running
request holds its prompt plus, on average, half its output), prefill chunks riding along in
decode steps (chunked prefill, so the fixed step cost is shared by the batch), and no prefix-cache
hits. Per request the cost is then

    prefill:  sum over its chunks of prefill_token_s * n + prefill_attn_s * n * (context + n)
    decode:   output * (base_s / batch + decode_seq_s) + kv_token_s * (output * prompt + output^2 / 2)
    compute:  compute_token_s * (prompt + output) * (1 - knee / tokens per saturated step)

and capacity = 1 / mean cost. It ignores prefix hits and the smaller batches of a fleet that is
not full, so it differs from the measured capacity by tens of percent (both are reported).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flotilla.profiles import EngineLimits, StepTimeProfile
from flotilla.sim.request import SimRequest


def saturated_batch(requests: Sequence[SimRequest], limits: EngineLimits) -> float:
    held = sum(r.prompt_tokens + r.output_tokens / 2 for r in requests) / len(requests)
    kv_tokens = limits.kv_cache_blocks * limits.block_size
    return max(1.0, min(float(limits.max_num_seqs), kv_tokens / held))


def request_cost_s(req: SimRequest, profile: StepTimeProfile, limits: EngineLimits, batch: float) -> float:
    c = profile.coefficients
    cost = 0.0
    done = 0
    while done < req.prompt_tokens:
        n = min(limits.max_num_batched_tokens, req.prompt_tokens - done)
        cost += c.prefill_token_s * n + c.prefill_attn_s * n * (done + n)
        done += n
    o = req.output_tokens
    cost += o * (c.base_s / batch + c.decode_seq_s)
    cost += c.kv_token_s * (o * req.prompt_tokens + o * o / 2)
    # Compute-bound tokens: a saturated step carries `batch` decodes plus prefill in proportion.
    step_tokens = batch * (1.0 + req.prompt_tokens / max(1, o))
    cost += c.compute_token_s * (req.prompt_tokens + o) * max(0.0, 1.0 - c.compute_knee_tokens / step_tokens)
    return cost


def instance_capacity(
    requests: Sequence[SimRequest], profile: StepTimeProfile, limits: EngineLimits
) -> float:
    """Requests per second one engine sustains on this request mix."""
    if not requests:
        raise ValueError("no requests")
    batch = saturated_batch(requests, limits)
    mean = sum(request_cost_s(r, profile, limits, batch) for r in requests) / len(requests)
    return 1.0 / mean


def measured_capacity(
    requests: Sequence[SimRequest], profile: StepTimeProfile, limits: EngineLimits, instances: int
) -> float:
    """Requests per second per engine that the simulated fleet completes when overloaded.

    Arrivals are compressed to four times the analytic estimate, so every engine runs as full as
    its batch and KV limits allow; the rate is taken between the 20th and 80th percentile of
    completion times, away from the start-up and the drain. Least-request routing keeps the engines
    evenly fed. This, not the analytic estimate, is the load axis of the comparisons: it includes
    prefix hits, preemptions and the real batch sizes.
    """
    from flotilla.sim.scenario import Scenario
    from flotilla.sim.simulator import SimConfig, simulate
    from flotilla.sim.workloads import at_rate

    rate = 4.0 * instances * instance_capacity(requests, profile, limits)
    result = simulate(
        at_rate(list(requests), rate),
        profile,
        limits,
        Scenario(name="capacity", policy="least_request"),
        SimConfig(instances=instances),
    )
    done = np.sort(result.finished[np.isfinite(result.finished)])
    lo, hi = int(0.2 * len(done)), int(0.8 * len(done))
    if hi - lo < 2 or done[hi] <= done[lo]:
        raise ValueError("too few requests to measure capacity")
    return (hi - lo) / float(done[hi] - done[lo]) / instances
