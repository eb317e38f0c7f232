"""Least work: send a request where the engine has the least estimated work ahead, in engine seconds.

Counting requests (least_request) treats a 9k-token prompt that is still prefilling like a request
about to finish; counting predicted output tokens (predicted_load) ignores prefill altogether. On
long-prompt traces (Mooncake: ~9.4k prompt tokens, ~360 output tokens) the prefill is most of an
engine's work, and a new request's time to first token is mostly the prefill queued ahead of it.
SGLang's and vLLM's cache_aware routers balance that implicitly (without a prefix match they pick
the worker sent the fewest prompt characters). This policy charges each instance, in seconds of
engine time, what it still has to do for this router:

    work = prefill_token_s x pending prefill tokens      (own requests with no first token yet)
         + decode_token_s  x (predicted remaining output tokens
                              + foreign_request_tokens x requests only the scrape shows)

and, with `prefix_match`, adds the request's own prefill on each instance, minus the part of its
prompt the instance is likely to hold (the prefix index of `prefix_affinity`): a long match wins
unless the holder is busier by more than the prefill it saves, which is SGLang's "prefix match
when long enough, otherwise least load" without a threshold to tune.

The default weights come from the H100 Llama-3.1-8B step profile (flotilla/profiles/data/
h100-llama3-8b.json; a unit test recomputes them from it): a prompt token in a long prefill chunk
costs prefill_token_s + compute_token_s (chunks are far above the 208-token compute knee) =
21.0 us; one decode token of one sequence costs its marginal share of a step, decode_seq_s +
kv_token_s x context, = 119.6 us at a 2,048-token context. The attention term of a prefill (quadratic
in the prompt) and the context dependence of decode are left out: the view has no per-request
lengths, and the weights are params.
"""

from __future__ import annotations

import random
from typing import ClassVar

from flotilla.api.routing import LeastWorkParams
from flotilla.router.policies.base import InstanceView, RequestFeatures, Snapshot, rank_by_cost
from flotilla.router.policies.prefix_affinity import PrefixIndex


class LeastWork:
    name: ClassVar[str] = "least_work"
    Params = LeastWorkParams

    def __init__(self, params: LeastWorkParams) -> None:
        self.params = params
        self.index = PrefixIndex(params.index_blocks, params.max_instances)

    def work(self, inst: InstanceView) -> float:
        """Engine seconds of work the instance has ahead of a new request (module docstring)."""
        p = self.params
        foreign = max(0.0, inst.est_requests - inst.inflight - inst.peer_inflight)
        decode = inst.predicted_remaining_tokens + foreign * p.foreign_request_tokens
        return p.prefill_token_s * inst.pending_prefill_tokens + p.decode_token_s * decode

    def own_prefill(self, request: RequestFeatures, inst: InstanceView) -> float:
        """Engine seconds to prefill this request there: the prompt minus the share likely cached.

        Only the leading blocks are hashed (2,048 tokens at most), so the matched fraction of the
        hashed blocks stands for the fraction of the prompt cached, as SGLang's match rate does."""
        hashes = request.prefix_hashes
        matched = self.index.match(inst.id, hashes) if hashes else 0
        uncached = request.prompt_tokens * (1.0 - matched / len(hashes)) if hashes else request.prompt_tokens
        return self.params.prefill_token_s * uncached

    def observe(self, request: RequestFeatures, instance_id: str) -> None:
        if self.params.prefix_match and request.prefix_hashes:
            self.index.add(instance_id, request.prefix_hashes)

    def rank(self, request: RequestFeatures, snapshot: Snapshot, rng: random.Random) -> list[InstanceView]:
        inst = snapshot.instances
        costs = [self.work(i) for i in inst]
        if self.params.prefix_match:
            costs = [c + self.own_prefill(request, i) for c, i in zip(costs, inst, strict=True)]
        return rank_by_cost(inst, costs, rng, self.params.choices)
