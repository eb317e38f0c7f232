"""What the load generator records per request: the client's view, nothing inferred."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    """One request as the client saw it. Times in seconds; `sent_s` from the start of the run."""

    index: int
    sent_s: float
    expected_tokens: int
    status: int = 0
    ttft_s: float | None = None
    """Send to the first streamed chunk carrying text."""
    e2e_s: float | None = None
    """Send to the end of the stream ([DONE]) or to the failure."""
    itl_s: list[float] = field(default_factory=list)
    """Gaps between consecutive text chunks (inter-token latencies when one chunk is one token)."""
    output_tokens: int = 0
    """`usage.completion_tokens` when the stream reports it, else the text chunks counted."""
    chunks: int = 0
    finish_reason: str | None = None
    done: bool = False
    """The stream ended with [DONE]."""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.done and not self.error

    @property
    def lost(self) -> bool:
        """Accepted or not, the client did not get the whole answer it asked for (with `ignore_eos`
        a complete answer has exactly `expected_tokens` tokens)."""
        return not self.ok or self.output_tokens < self.expected_tokens
