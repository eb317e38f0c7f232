"""Failing over: an instance that could not serve a request leaves the rotation, and the request
goes elsewhere.

The unsliced path (`proxy.py`, an engine unreachable before the first byte) and the sliced path
(`continuation.py`, an engine lost mid-slice) fail over the same way; this is that way, once.
"""

from __future__ import annotations

from collections.abc import Callable

from flotilla.router.instances import InstanceRecord
from flotilla.router.metrics import RouterMetrics


def eject_for_retry(
    record: InstanceRecord,
    tried: set[str],
    model: str,
    *,
    metrics: RouterMetrics,
    on_eject: Callable[[str], None],
) -> None:
    """Eject `record` (until a scrape finds it answering again), tell the router, keep this request
    off it (`tried` is the exclusion set of its next placement) and count the retry."""
    record.eject()
    on_eject(record.id)
    tried.add(record.id)
    metrics.retries.labels(model).inc()
