"""How many requests per second one engine can serve on a workload, estimated from the profile.

The load axis of every comparison is a fraction of this capacity, so it must not depend on any
policy. The estimate assumes a saturated engine: decode batches as large as `max_num_seqs` and the
KV cache allow (a running request holds its prompt plus, on average, half its output), prefill
chunks riding along in decode steps (chunked prefill, so the fixed step cost is shared by the
batch), and no prefix-cache hits. Per request the cost is then

    prefill:  sum over its chunks of prefill_token_s * n + prefill_attn_s * n * (context + n)
    decode:   output * (base_s / batch + decode_seq_s) + kv_token_s * (output * prompt + output^2 / 2)
    compute:  compute_token_s * (prompt + output) * (1 - knee / tokens per saturated step)

and capacity = 1 / mean cost. Prefix hits make real capacity higher on traces that share prompts,
so a "load" of 1.0 may still be served there; the achieved throughput is reported next to it.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def instance_capacity(requests: Sequence[SimRequest], profile: StepTimeProfile, limits: EngineLimits) -> float:
    """Requests per second one engine sustains on this request mix."""
    if not requests:
        raise ValueError("no requests")
    batch = saturated_batch(requests, limits)
    mean = sum(request_cost_s(r, profile, limits, batch) for r in requests) / len(requests)
    return 1.0 / mean
