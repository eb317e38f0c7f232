"""core/v1 Events, as the operator and the placement loop post them to explain what they did.

`kubectl describe` and `kubectl get events` show them beside kube-scheduler's and the kubelet's, so
both components fill the same fields the same way: a unique name (as client-go's recorder makes
one), the reporting component, first and last time, and a message within 1024 characters (the
limit events.k8s.io sets on an event's note).
"""

from __future__ import annotations

import uuid
from typing import Any

MESSAGE_LIMIT = 1024


def event_body(
    involved: dict[str, Any], reason: str, message: str, *, event_type: str, component: str, now: str
) -> dict[str, Any]:
    """An Event about `involved` (an object reference with at least name and namespace)."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{involved.get('name')}.{uuid.uuid4().hex[:16]}",
            "namespace": involved.get("namespace"),
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
