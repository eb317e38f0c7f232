"""A simulated request, and how its shared prompt prefix maps onto engine and router blocks.

Traces describe prompt sharing coarsely: Mooncake gives one id per 512-token block, equal ids at
equal positions meaning identical content. The engine model caches prefixes in "units" (the full
engine blocks inside one such trace block) rather than block by block, so a 12k-token prompt costs
a few dozen cache operations instead of hundreds; hits keep trace-block granularity, which is all
the trace can tell anyway. Hashes are Python's tuple hashes of ints: deterministic across
processes (PYTHONHASHSEED only salts str and bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

_MASK = (1 << 62) - 1


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One request of a workload: what arrives, how long it really is, what it shares."""

    id: int
    arrival: float
    """Seconds from the start of the run."""
    prompt_tokens: int
    output_tokens: int
    """True output length (the engine stops there); policies never see it, the oracle does."""
    prefix_ids: tuple[int, ...] = ()
    """Ids of the prompt's `prefix_block_tokens`-sized blocks; equal ids at equal positions = same text."""
    prefix_block_tokens: int = 512
    parent: int | None = None
    """Previous turn of the same session: this request is not sent before that one completes."""
    text: str | None = None
    """Prompt text, when the workload has it (for text-based predictors and router hashing)."""
    max_tokens: int | None = None
    """The client's output limit (None: none; the traces have none, the engine stops at the true length)."""


@dataclass(frozen=True, slots=True)
class PrefixUnit:
    """A run of full engine blocks that is cached or evicted as one."""

    hash: int
    blocks: int
    end_token: int
    """Prompt tokens covered from position 0 through the end of this unit."""


def prefix_units(req: SimRequest, block_size: int) -> tuple[PrefixUnit, ...]:
    """The shareable units of a prompt: one per trace block, holding its full engine blocks."""
    t = req.prefix_block_tokens
    if not req.prefix_ids or t % block_size:
        return ()
    units: list[PrefixUnit] = []
    h = 0
    for tb, pid in enumerate(req.prefix_ids):
        start = tb * t
        end = min(start + t, req.prompt_tokens)
        blocks = (end - start) // block_size
        if blocks <= 0:
            break
        h = hash((h, pid, blocks)) & _MASK
        units.append(PrefixUnit(h, blocks, start + blocks * block_size))
        if end < start + t:
            break
    return tuple(units)


def router_prefix_hashes(req: SimRequest, block_tokens: int = 16, max_blocks: int = 16) -> tuple[int, ...]:
    """Chained hashes of the prompt's leading router blocks, as the router computes for token prompts.

    Blocks inside a known trace block hash by its id (shared text, shared hash); prompts without
    prefix ids are unique, so their hashes are too.
    """
    out: list[int] = []
    h = 0
    t = req.prefix_block_tokens
    for r in range(min(req.prompt_tokens // block_tokens, max_blocks)):
        tb = r * block_tokens // t
        content = req.prefix_ids[tb] if tb < len(req.prefix_ids) else -1 - req.id  # ids are >= 0
        h = hash((h, content, r)) & _MASK
        out.append(h)
    return tuple(out)
