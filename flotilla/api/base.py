"""The one pydantic base of the API types: camelCase on the wire, docstrings as descriptions.

Field docstrings become the CRD's OpenAPI descriptions (what `kubectl explain` prints), so the
models are the single source of both the Python types and the CRD (see `crdgen`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Base of every spec and status type."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The Kubernetes JSON form: camelCase keys, unset optional fields omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
