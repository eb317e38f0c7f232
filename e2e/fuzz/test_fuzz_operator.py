"""The operator meets fleets the API server accepts but nobody can serve, and never falls over.

Beside a healthy fleet: a GPU type no node has, more GPUs per replica than any node, a
PriorityClass that does not exist, and fuzzed valid specs (specgen.py; at most 2 replicas each, so
the shared cluster stays small). The operator (a real `flotilla operator run` process) and the
placement loop run throughout. Every fleet must get a status for its current generation, and one
that is not Ready must carry a condition that says why; the healthy fleet, created last, must
still become Ready, and the operator must still be running.

FLOTILLA_FUZZ_FLEETS sets how many fuzzed fleets (default 8).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from flotilla.api.crdgen import spec_schema
from flotilla.localcluster.readiness import wait_until

pytestmark = pytest.mark.e2e

FUZZED = int(os.environ.get("FLOTILLA_FUZZ_FLEETS", "8"))
# Conditions that explain a fleet that is not Ready (status.py and the placement loop write them).
EXPLAINED = {("Unschedulable", "True"), ("Degraded", "True")}


def _specgen() -> ModuleType:
    key = "flotilla_e2e_fuzz_specgen"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).resolve().parent / "specgen.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def fuzzed_specs(count: int) -> list[dict[str, Any]]:
    """`count` valid specs drawn by hypothesis, shrunk to at most 2 replicas."""
    specgen = _specgen()
    drawn: list[dict[str, Any]] = []

    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(specgen.values(spec_schema()))
    def collect(spec: dict[str, Any]) -> None:
        drawn.append(spec)

    collect()
    out = []
    for raw in drawn[-count:]:  # the last ones: hypothesis starts with the smallest
        spec = specgen.repair(raw)
        spec["replicas"] = min(spec.get("replicas", 1), 2)
        spec.pop("minReplicas", None)
        spec.pop("maxReplicas", None)
        # Below the healthy fleet's tier: the placement solver must never preempt it for these.
        if spec.get("priority", {}).get("tier", 0) > 1000:
            spec["priority"]["tier"] = 1000
        out.append(spec)
    return out


def _why(fleet: dict[str, Any]) -> str | None:
    """None while the operator has not settled on this generation; else 'Ready' or the reason."""
    status = fleet.get("status") or {}
    if status.get("observedGeneration") != fleet["metadata"]["generation"]:
        return None
    conds = {c["type"]: c for c in status.get("conditions") or []}
    if conds.get("Ready", {}).get("status") == "True":
        return "Ready"
    for kind, value in EXPLAINED:
        c = conds.get(kind, {})
        if c.get("status") == value and c.get("reason") not in {"BelowMinAvailable"} and c.get("message"):
            return f"{kind}: {c['reason']}: {c['message']}"
    return None


async def test_operator_survives_fleets_it_cannot_act_on(
    operator: Any, placement: Any, fleets: Any, namespace: str
) -> None:
    bad = {
        "no-such-gpu": {"resources": {"gpus": 1, "gpuProduct": "NVIDIA-B300-NOWHERE"}},
        "too-wide": {"resources": {"gpus": 64}},
        "no-class": {"priority": {"className": "no-such-priority-class"}},
    }
    for name, spec in bad.items():
        await fleets.create(fleets.manifest(name, 1, **spec))
    fuzzed = {f"fuzz-{i}": spec for i, spec in enumerate(fuzzed_specs(FUZZED))}
    for name, spec in fuzzed.items():
        body = fleets.manifest(name)
        body["spec"] = spec
        await fleets.create(body)
    await fleets.create(fleets.manifest("healthy", 1, priority={"tier": 1_000_000_000}))

    # The operator keeps reconciling the good fleet beside the ones it cannot serve.
    await fleets.wait_ready("healthy", 1, timeout_s=120)
    whys: dict[str, str] = {}

    async def all_explained() -> bool:
        for name in [*bad, *fuzzed]:
            if name not in whys and (why := _why(await fleets.get(name))) is not None:
                whys[name] = why
        return len(whys) == len(bad) + len(fuzzed)

    try:
        await wait_until(all_explained, timeout_s=120, what="a condition on every fleet", interval_s=1)
    finally:
        print("\n" + "\n".join(f"{n}: {w[:300]}" for n, w in sorted(whys.items())))
        for name in sorted((set(bad) | set(fuzzed)) - set(whys)):
            fleet = await fleets.get(name)
            print(f"UNEXPLAINED {name}: spec {fleet['spec']}\n  status {fleet.get('status')}")
            print("\n".join(line for line in operator.logs().splitlines() if name in line)[-2000:])
    assert operator.alive(), "the operator exited"
    assert whys["no-such-gpu"].startswith("Unschedulable: PodsUnschedulable"), whys["no-such-gpu"]
    assert whys["too-wide"].startswith("Unschedulable: PodsUnschedulable"), whys["too-wide"]
    assert whys["no-class"] == "Degraded: Blocked: PriorityClass no-such-priority-class not found"
