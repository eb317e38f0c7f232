"""Turn a pydantic JSON Schema into a Kubernetes structural OpenAPI v3 schema.

The API server accepts only structural schemas for CRDs: every node has a type, no $ref, no
anyOf/oneOf that introduce types (except the int-or-string pattern), no additionalProperties beside
properties. Pydantic emits JSON Schema 2020-12 with $defs, `anyOf [X, null]` for optional fields and
numeric exclusive bounds; this module rewrites each of those, and fails loudly on anything else, so
a model that cannot be expressed never produces a CRD the server would refuse.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

# Keys that describe values; allowed to pass through unchanged.
_VALUE_KEYS = {
    "description",
    "default",
    "enum",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
}


class NotStructuralError(ValueError):
    """The pydantic schema uses a construct with no structural equivalent."""


def to_structural(schema: Schema) -> Schema:
    """The structural form of a top-level pydantic schema (with its $defs)."""
    defs: dict[str, Schema] = schema.get("$defs", {})
    root = {k: v for k, v in schema.items() if k != "$defs"}
    return _convert(root, defs, path="")


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    ref = node.get("$ref")
    if ref is None:
        return node
    name = ref.removeprefix("#/$defs/")
    if name not in defs:
        raise NotStructuralError(f"unknown $ref {ref}")
    # Keys next to the $ref (a field's description, default) override the definition's.
    merged = dict(defs[name])
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def _convert(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    node = _resolve(node, defs)
    node = {k: v for k, v in node.items() if k != "title"}
    if node.get("default", 0) is None:
        # An omitted field is the structural way to say "null".
        node.pop("default")
    if isinstance(node.get("description"), str):
        # Docstrings wrap lines; descriptions are prose (kubectl explain re-wraps them).
        node["description"] = " ".join(node["description"].split())

    variants = node.pop("anyOf", None)
    if variants is not None:
        non_null = [_resolve(v, defs) for v in variants if v.get("type") != "null"]
        if len(non_null) == 1:
            merged = dict(non_null[0])
            merged.update(node)
            return _convert(merged, defs, path)
        types = sorted(v.get("type", "?") for v in non_null)
        if types == ["integer", "string"]:
            return _int_or_string(node, non_null, path)
        raise NotStructuralError(f"{path or '<root>'}: cannot express anyOf of {types}")

    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "exclusiveMinimum" in node:
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    if "exclusiveMaximum" in node:
        node["maximum"] = node.pop("exclusiveMaximum")
        node["exclusiveMaximum"] = True

    kind = node.get("type")
    if kind is None:
        if "enum" in node and all(isinstance(e, str) for e in node["enum"]):
            node["type"] = kind = "string"
        else:
            raise NotStructuralError(f"{path or '<root>'}: no type")
    if kind == "object":
        return _object(node, defs, path)
    if kind == "array":
        node["items"] = _convert(node.get("items", {}), defs, f"{path}[]")
        return node
    return _check_keys(node, path, {"type", "exclusiveMinimum", "exclusiveMaximum"})


def _object(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    props = node.pop("properties", None)
    extra = node.pop("additionalProperties", None)
    out: Schema = {k: v for k, v in node.items() if k != "required"}
    if props is not None:
        out["properties"] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in props.items()}
        # Required fields with a default are not required on the wire: the server fills them in.
        required = [r for r in node.get("required", []) if "default" not in out["properties"][r]]
        if required:
            out["required"] = required
        # Nested objects default to {} so the server applies their fields' own defaults.
        for sub in out["properties"].values():
            if sub.get("type") == "object" and isinstance(sub.get("default"), dict):
                sub["default"] = {}
    elif isinstance(extra, dict) and extra:
        if extra.get("type") is None and not extra.get("anyOf"):
            out["x-kubernetes-preserve-unknown-fields"] = True
        else:
            out["additionalProperties"] = _convert(extra, defs, f"{path}.*")
    elif extra is True or extra == {}:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return _check_keys(out, path, {"type", "properties", "required", "additionalProperties"})


def _int_or_string(node: Schema, variants: list[Schema], path: str) -> Schema:
    # The one anyOf a structural schema allows is exactly [{type: integer}, {type: string}] beside
    # x-kubernetes-int-or-string; the branches' value validations move up (pattern and length apply
    # to strings only, minimum and maximum to numbers only, so they do not clash).
    out: Schema = {k: v for k, v in node.items() if k != "type"}
    for variant in variants:
        for key, value in variant.items():
            if key in {"type", "title"}:
                continue
            if key in out and out[key] != value:
                raise NotStructuralError(f"{path}: int-or-string branches disagree on {key}")
            out[key] = value
    out["x-kubernetes-int-or-string"] = True
    out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return _check_keys(out, path, {"anyOf"})


def _check_keys(node: Schema, path: str, allowed: set[str]) -> Schema:
    unknown = set(node) - _VALUE_KEYS - allowed
    if unknown:
        raise NotStructuralError(f"{path or '<root>'}: unsupported keys {sorted(unknown)}")
    return node
