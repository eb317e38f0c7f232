"""Hypothesis strategies for InferenceFleet specs: valid ones, and single mutations of them.

Specs are drawn from the CRD's structural schema, which `flotilla.api.crdgen` generates from the
pydantic models, so every field, bound, pattern and enum the models declare is exercised and a
new field is fuzzed without touching this file. `repair` then makes a drawn spec satisfy the
cross-field rules (CEL), giving specs both sides should accept; `mutated` breaks one thing of such
a spec (a wrong type, a number out of range, a missing required field, an unknown field, a string
too long or off its pattern, a CEL rule, unicode where it should not be) and says which field the
API server's refusal should name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from flotilla.api.spec import RESERVED_ENGINE_FLAGS

Schema = dict[str, Any]
INT64 = 2**63 - 1
# Text worth throwing at a string field: any code point JSON can carry (no lone surrogates).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)

RESERVED_FLAGS = ("--model", "--port", "--max-model-len", "--tensor-parallel-size", "--host")


def _string(node: Schema) -> st.SearchStrategy[str]:
    lo, hi = node.get("minLength", 0), node.get("maxLength", 64)
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "pattern" in node:
        return st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: lo <= len(s) <= hi)
    return st.text(st.characters(exclude_categories=["Cs"]), min_size=lo, max_size=min(hi, 40))


def _integer(node: Schema) -> st.SearchStrategy[int]:
    return st.integers(node.get("minimum", -INT64 - 1), node.get("maximum", INT64))


def values(node: Schema) -> st.SearchStrategy[Any]:
    """Values the schema node accepts (cross-field CEL rules aside)."""
    if node.get("x-kubernetes-int-or-string"):
        return _integer(node) | _string(node)
    if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
        return st.dictionaries(TEXT, JSON, max_size=3)
    kind = node["type"]
    if kind == "string":
        return _string(node)
    if kind == "integer":
        return _integer(node)
    if kind == "number":
        return st.floats(
            node.get("minimum"),
            node.get("maximum"),
            exclude_min=bool(node.get("exclusiveMinimum")),
            allow_nan=False,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(values(node["items"]), max_size=min(node.get("maxItems", 3), 3))
    if "properties" in node:
        required = set(node.get("required", []))
        props = node["properties"]
        return st.fixed_dictionaries(
            {k: values(v) for k, v in props.items() if k in required},
            optional={k: values(v) for k, v in props.items() if k not in required},
        )
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        keys = st.from_regex(r"[a-z][a-z0-9.-]{0,20}(/[a-z0-9]{1,10})?", fullmatch=True)
        return st.dictionaries(keys, values(extra), max_size=min(node.get("maxProperties", 3), 3))
    raise ValueError(f"no strategy for {node}")


def repair(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec changed just enough to satisfy every cross-field rule (the CEL rules)."""
    s = copy.deepcopy(spec)
    if "minReplicas" in s and "maxReplicas" in s and s["minReplicas"] > s["maxReplicas"]:
        s["minReplicas"], s["maxReplicas"] = s["maxReplicas"], max(1, s["minReplicas"])
    replicas = s.get("replicas", 1)
    replicas = max(replicas, s.get("minReplicas", 0))
    replicas = min(replicas, s.get("maxReplicas", replicas))
    s["replicas"] = replicas
    if s.get("minReplicas", 0) > replicas:
        s["minReplicas"] = replicas
    engine, resources = s.setdefault("engine", {}), s.setdefault("resources", {})
    tp, gpus = engine.get("tensorParallelSize", 1), resources.get("gpus", 1)
    if gpus % tp or (tp > 1 and gpus == 0):
        resources["gpus"] = tp
    if resources.get("gpus", 1) == 0:
        resources.pop("gpuProduct", None)
    if "maxNumSeqs" in engine and engine.get("maxNumBatchedTokens", INT64) < engine["maxNumSeqs"]:
        engine["maxNumBatchedTokens"] = engine["maxNumSeqs"]
    if "extraArgs" in engine:
        engine["extraArgs"] = [a for a in engine["extraArgs"] if a.split("=")[0] not in RESERVED_ENGINE_FLAGS]
    for var in engine.get("env", []):
        if "value" in var:
            var.pop("valueFrom", None)
        source = var.get("valueFrom")
        if source is not None:
            if "secretKeyRef" in source:
                source.pop("configMapKeyRef", None)
            elif "configMapKeyRef" not in source:
                var.pop("valueFrom")
    cache = engine.get("modelCache")
    if cache and "claimName" in cache:
        cache.pop("sizeLimit", None)
    priority = s.get("priority", {})
    if "tier" in priority:
        priority.pop("className", None)
    rollout = s.get("rollout", {})
    if rollout.get("maxSurge", 1) in (0, "0%") and rollout.get("maxUnavailable", 0) in (0, "0%"):
        rollout["maxSurge"] = 1
    for toleration in s.get("tolerations", []):
        if toleration.get("operator", "Equal") == "Equal" and not toleration.get("key"):
            toleration["key"] = "example.com/taint"
        if toleration.get("operator") == "Exists":
            toleration.pop("value", None)
        if "tolerationSeconds" in toleration:
            toleration["effect"] = "NoExecute"
    for key in ("podLabels", "podAnnotations"):
        if key in s:
            s[key] = {k: v for k, v in s[key].items() if not k.startswith("flotilla.dev/")}
    return s


@dataclass(frozen=True)
class Mutation:
    kind: str
    path: str
    """The field the API server's refusal must name (Kubernetes field-path syntax)."""


def _nodes(value: Any, node: Schema, path: str) -> list[tuple[str, Any, Schema, Any, Any]]:
    """Every (path, value, schema, parent container, key in parent) present in `value`."""
    out: list[tuple[str, Any, Schema, Any, Any]] = []

    def walk(v: Any, n: Schema, p: str, parent: Any, key: Any) -> None:
        out.append((p, v, n, parent, key))
        if isinstance(v, dict) and "properties" in n:
            for k, sub in v.items():
                if k in n["properties"]:
                    walk(sub, n["properties"][k], f"{p}.{k}", v, k)
        elif isinstance(v, dict) and isinstance(n.get("additionalProperties"), dict):
            for k, sub in v.items():
                walk(sub, n["additionalProperties"], f"{p}[{k}]", v, k)
        elif isinstance(v, list) and "items" in n:
            for i, sub in enumerate(v):
                walk(sub, n["items"], f"{p}[{i}]", v, i)

    walk(value, node, path, None, None)
    return out


def _other_type(node: Schema) -> st.SearchStrategy[Any]:
    kinds = {
        "string": TEXT,
        "integer": st.integers(-1000, 1000),
        "number": st.floats(allow_nan=False, allow_infinity=False),
    }
    kinds |= {
        "boolean": st.booleans(),
        "array": st.lists(st.integers(), max_size=2),
        "object": st.dictionaries(TEXT, st.integers(), max_size=2),
    }
    if node.get("x-kubernetes-int-or-string"):
        own = {"string", "integer"}
    elif node.get("x-kubernetes-preserve-unknown-fields"):
        own = {"object"}
    else:
        own = {node["type"]} | ({"integer"} if node["type"] == "number" else set())
    return st.one_of([s for k, s in kinds.items() if k not in own])


@st.composite
def mutated(draw: st.DrawFn, schema: Schema) -> tuple[dict[str, Any], Mutation]:
    """A valid spec with one thing broken, and the field a refusal must name."""
    spec = repair(draw(values(schema)))
    nodes = _nodes(spec, schema, "spec")
    kind = draw(
        st.sampled_from(
            [
                "wrong_type",
                "out_of_range",
                "missing_required",
                "unknown_field",
                "too_long",
                "off_pattern",
                "cel",
                "unicode",
            ]
        )
    )
    if kind == "cel":
        return draw(_break_cel(spec))
    candidates = [c for c in nodes if _applies(kind, c[2], c[1]) and c[3] is not None]
    if kind in {"unknown_field", "missing_required"}:
        candidates = [c for c in nodes if _applies(kind, c[2], c[1])]
    if not candidates:
        kind, candidates = "wrong_type", [c for c in nodes if c[3] is not None]
    path, value, node, parent, key = draw(st.sampled_from(candidates))
    if kind == "wrong_type":
        parent[key] = draw(_other_type(node))
        return spec, Mutation(kind, path)
    if kind == "out_of_range":
        lo, hi = node.get("minimum"), node.get("maximum")
        choices = [
            v
            for v in (lo - 1 if lo is not None else None, hi + 1 if hi is not None else None)
            if v is not None
        ]
        choices += [2**63, -(2**63) - 1, 2**70]  # past int64: the server's integers are 64-bit
        parent[key] = draw(st.sampled_from(choices))
        return spec, Mutation(kind, path)
    if kind == "missing_required":
        field = draw(st.sampled_from(node["required"]))
        del value[field]
        return spec, Mutation(kind, f"{path}.{field}")
    if kind == "unknown_field":
        field = draw(st.sampled_from(["replica", "gpu", "Image", "x", "ünknown", "max_surge", "spec"]))
        value[field] = draw(JSON_LEAF)
        return spec, Mutation(kind, f"{path}.{field}")
    if kind == "too_long":
        if node.get("type") == "array":
            parent[key] = value + [value[0] if value else ""] * (node["maxItems"] + 1 - len(value))
        else:
            parent[key] = draw(st.sampled_from(["x", "é", "😀"])) * (
                node["maxLength"] + draw(st.sampled_from([1, 100_000]))
            )
        return spec, Mutation(kind, path)
    if kind == "off_pattern":
        bad = draw(st.sampled_from([" ", "\n", "-", "%", "ü", "1 Gi", "9" * 70, "abc\n", "\u202e", "0x10"]))
        parent[key] = draw(st.sampled_from([bad, f"{value}{bad}", f"{bad}{value}"]))
        return spec, Mutation(kind, path)
    # unicode: a free string becomes one of the awkward texts (often still valid).
    parent[key] = draw(
        st.sampled_from(
            ["Ⅻ", "😀" * 3, "e\u0301", "\u0000", "\uff21\uff22", "\u0130", "ß", "\ufeffx", "\u2028"]
        )
    )
    return spec, Mutation(kind, path)


def _applies(kind: str, node: Schema, value: Any) -> bool:
    if kind == "wrong_type":
        return True
    if kind == "out_of_range":
        return node.get("type") in {"integer", "number"} or bool(
            node.get("x-kubernetes-int-or-string") and isinstance(value, int)
        )
    if kind == "missing_required":
        return isinstance(value, dict) and bool(node.get("required"))
    if kind == "unknown_field":
        return isinstance(value, dict) and "properties" in node
    if kind == "too_long":
        return ("maxLength" in node and isinstance(value, str)) or (
            "maxItems" in node and isinstance(value, list)
        )
    if kind == "off_pattern":
        return isinstance(value, str) and ("pattern" in node or "enum" in node)
    return isinstance(value, str) and "enum" not in node and "pattern" not in node


@st.composite
def _break_cel(draw: st.DrawFn, spec: dict[str, Any]) -> tuple[dict[str, Any], Mutation]:
    s = spec
    engine, resources = s.setdefault("engine", {}), s.setdefault("resources", {})
    rule = draw(
        st.sampled_from(
            [
                "min",
                "max",
                "minmax",
                "tp",
                "product",
                "labels",
                "args",
                "seqs",
                "priority",
                "rollout",
                "cache",
                "envboth",
                "tolkey",
                "tolvalue",
                "tolseconds",
                "envsource",
            ]
        )
    )
    if rule == "min":
        s["minReplicas"] = s.get("replicas", 1) + draw(st.integers(1, 5))
        s.pop("maxReplicas", None)
        return s, Mutation("cel", "spec.minReplicas")
    if rule == "max":
        s["replicas"], s["maxReplicas"] = draw(st.integers(2, 100)), 1
        s.pop("minReplicas", None)
        return s, Mutation("cel", "spec.replicas")
    if rule == "minmax":
        s["replicas"], s["minReplicas"], s["maxReplicas"] = 6, 6, 5
        return s, Mutation("cel", "spec.maxReplicas")
    if rule == "tp":
        tp = draw(st.integers(2, 8))
        engine["tensorParallelSize"] = tp
        resources["gpus"] = draw(st.sampled_from([0, tp + 1, tp * 2 - 1]))
        resources.pop("gpuProduct", None)
        return s, Mutation("cel", "spec.resources.gpus")
    if rule == "product":
        engine["tensorParallelSize"] = 1
        resources["gpus"], resources["gpuProduct"] = 0, "NVIDIA-H100-80GB-HBM3"
        return s, Mutation("cel", "spec.resources.gpuProduct")
    if rule == "labels":
        key = draw(st.sampled_from(["podLabels", "podAnnotations"]))
        s[key] = {**s.get(key, {}), "flotilla.dev/" + draw(st.sampled_from(["fleet", "tier", "x"])): "1"}
        return s, Mutation("cel", "spec.podLabels")
    if rule == "args":
        flag = draw(st.sampled_from(RESERVED_FLAGS))
        engine["extraArgs"] = [*engine.get("extraArgs", []), draw(st.sampled_from([flag, f"{flag}=1"]))]
        return s, Mutation("cel", "spec.engine.extraArgs")
    if rule == "seqs":
        engine["maxNumSeqs"], engine["maxNumBatchedTokens"] = 256, draw(st.integers(1, 255))
        return s, Mutation("cel", "spec.engine.maxNumBatchedTokens")
    if rule == "priority":
        s["priority"] = {"tier": 1, "className": "high"}
        return s, Mutation("cel", "spec.priority.className")
    if rule == "rollout":
        s["rollout"] = {
            "maxSurge": draw(st.sampled_from([0, "0%"])),
            "maxUnavailable": draw(st.sampled_from([0, "0%"])),
        }
        return s, Mutation("cel", "spec.rollout.maxUnavailable")
    if rule == "cache":
        engine["modelCache"] = {"claimName": "weights", "sizeLimit": "10Gi"}
        return s, Mutation("cel", "spec.engine.modelCache.sizeLimit")
    if rule == "tolkey":
        s["tolerations"] = [{"operator": "Equal", "value": "x"}]
        return s, Mutation("cel", "spec.tolerations[0].key")
    if rule == "tolvalue":
        s["tolerations"] = [{"key": "example.com/t", "operator": "Exists", "value": "x"}]
        return s, Mutation("cel", "spec.tolerations[0].value")
    if rule == "tolseconds":
        s["tolerations"] = [{"key": "example.com/t", "effect": "NoSchedule", "tolerationSeconds": 30}]
        return s, Mutation("cel", "spec.tolerations[0].effect")
    ref = {"name": "hf", "key": "token"}
    if rule == "envboth":
        engine["env"] = [{"name": "HF_TOKEN", "value": "x", "valueFrom": {"secretKeyRef": ref}}]
        return s, Mutation("cel", "spec.engine.env[0]")
    engine["env"] = [
        {
            "name": "HF_TOKEN",
            "valueFrom": draw(st.sampled_from([{}, {"secretKeyRef": ref, "configMapKeyRef": ref}])),
        }
    ]
    return s, Mutation("cel", "spec.engine.env[0].valueFrom")
