"""Fuzz InferenceFleet specs against the real API server, and the operator against what it accepts.

1. Differential: each drawn spec (valid, raw from the schema, or a valid one with one thing broken;
   see specgen.py) is sent to the API server as a dry-run create with strict field validation, and
   to the pydantic model in strict mode (what the server's JSON types mean). They must agree; a
   refusal must name the broken field; an accepted spec, as the server stores it (defaults
   filled), must load in the model the way the operator loads it.
2. The operator meets accepted fleets it cannot act on (a GPU type no node has, more GPUs than any
   node, a missing PriorityClass, fuzzed valid specs): it stays up, keeps reconciling a healthy
   fleet beside them, and every fleet gets a status whose conditions say why it is not Ready.

FLOTILLA_FUZZ_EXAMPLES sets the number of drawn specs (default 200, about 20 s); with
FLOTILLA_FUZZ_REPORT=<file> the counts are written there as markdown.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from flotilla.api import InferenceFleetSpec, labels
from flotilla.api.crdgen import spec_schema
from flotilla.localcluster.controlplane import LocalCluster

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("FLOTILLA_FUZZ_EXAMPLES", "200"))
OPERATOR_FLEETS = int(os.environ.get("FLOTILLA_FUZZ_FLEETS", "8"))


def _load(name: str) -> ModuleType:
    key = f"flotilla_e2e_fuzz_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).resolve().parent / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


specgen = _load("specgen")
SCHEMA = spec_schema()
DRAWN = st.one_of(
    specgen.values(SCHEMA).map(lambda s: ("raw", s, None)),
    specgen.values(SCHEMA).map(lambda s: ("valid", specgen.repair(s), None)),
    specgen.mutated(SCHEMA).map(lambda sm: ("mutated", sm[0], sm[1])),
)


class DryRunServer:
    """Creates fleets with dryRun=All and fieldValidation=Strict: validated, defaulted, never stored."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self._client = httpx.Client(verify=cluster.admin_ssl_context(), timeout=30.0, trust_env=False)
        base = f"{cluster.server}/apis/{labels.GROUP}/{labels.VERSION}/namespaces/{namespace}/{labels.PLURAL}"
        self._url = base + "?dryRun=All&fieldValidation=Strict"

    def create(self, spec: Any) -> tuple[int, dict[str, Any]]:
        body = {
            "apiVersion": labels.API_VERSION,
            "kind": labels.KIND,
            "metadata": {"name": "fuzz"},
            "spec": spec,
        }
        response = self._client.post(self._url, content=json.dumps(body, ensure_ascii=False).encode())
        return response.status_code, response.json()

    def close(self) -> None:
        self._client.close()


@pytest.fixture
def dry_run(crd: str, cluster: LocalCluster) -> Any:
    ns = f"fuzz-{uuid.uuid4().hex[:6]}"
    server = DryRunServer(cluster, ns)
    with httpx.Client(verify=cluster.admin_ssl_context(), trust_env=False) as client:
        client.post(f"{cluster.server}/api/v1/namespaces", json={"metadata": {"name": ns}}).raise_for_status()
        yield server
        server.close()
        client.delete(f"{cluster.server}/api/v1/namespaces/{ns}")


def _model_verdict(spec: Any) -> str | None:
    """None when the model accepts the spec as JSON (strict types, like the server's); else why."""
    try:
        InferenceFleetSpec.model_validate_json(json.dumps(spec), strict=True)
    except ValidationError as exc:
        return str(exc)
    return None


def _names(message: str, path: str) -> bool:
    # Object fields appear as a.b, list items as a[0]; a map's entries as a[key] or a.key.
    if path in message or path.replace("[", ".").replace("]", "") in message:
        return True
    # Kubernetes lets a whole float (0.0) through an int-or-string field's schema check; the CEL
    # rule that reads it then fails, naming the object that holds the rule and the rule's message.
    parent = path.rsplit(".", 1)[0]
    return "expected XIntOrString" in message and f"{parent}: Invalid value" in message


def check_one(
    server: DryRunServer, source: str, spec: Any, mutation: Any, counts: collections.Counter[str]
) -> None:
    status, body = server.create(spec)
    accepted = status in (200, 201)
    model_error = _model_verdict(spec)
    kind = mutation.kind if mutation else source
    counts[f"{kind} {'accepted' if accepted else 'refused'}"] += 1
    shown = json.dumps(spec, ensure_ascii=False)[:1500]
    if accepted:
        assert model_error is None, f"server accepts, model refuses ({mutation}):\n{shown}\n{model_error}"
        # As stored (defaults filled in): the operator's lax load must succeed too.
        InferenceFleetSpec.model_validate(body["spec"])
        return
    message = body.get("message", "")
    assert status in (400, 422), f"refused with {status}, not as invalid: {message}"
    assert model_error is not None, f"server refuses, model accepts ({mutation}):\n{shown}\n{message}"
    assert "spec" in message, f"refusal names no field: {message}"
    if mutation is not None:
        assert _names(message, mutation.path), f"refusal does not name {mutation.path}: {message}\n{shown}"


def test_server_and_model_agree_on_fuzzed_specs(dry_run: DryRunServer) -> None:
    counts: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(DRAWN)
    def run(drawn: tuple[str, Any, Any]) -> None:
        source, spec, mutation = drawn
        check_one(dry_run, source, spec, mutation, counts)

    run()
    total = sum(counts.values())
    print(f"\n{total} specs tried against the API server and the model:")
    for key, n in sorted(counts.items()):
        print(f"  {key:32} {n}")
    if target := os.environ.get("FLOTILLA_FUZZ_REPORT"):
        _write_counts(Path(target), counts)
    accepted = sum(n for k, n in counts.items() if k.endswith("accepted"))
    assert 0 < accepted < total, "the draw must reach both verdicts"


def _write_counts(path: Path, counts: collections.Counter[str]) -> None:
    rows = collections.defaultdict(lambda: [0, 0])
    for key, n in counts.items():
        kind, verdict = key.rsplit(" ", 1)
        rows[kind][verdict == "refused"] += n
    lines = ["| drawn as | accepted | refused |", "|---|---|---|"]
    lines += [f"| {kind} | {a} | {r} |" for kind, (a, r) in sorted(rows.items())]
    total = sum(counts.values())
    lines.append(f"| **total** | {sum(a for a, _ in rows.values())} | {sum(r for _, r in rows.values())} |")
    path.write_text(f"{total} specs\n\n" + "\n".join(lines) + "\n")
