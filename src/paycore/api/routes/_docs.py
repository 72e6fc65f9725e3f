"""OpenAPI documentation for handlers that decode their own bodies.

The handlers read raw bytes and decode them with msgspec's strict decoder
(Litestar's ``data`` parameter converts leniently and would accept ``"100"``
for an amount), so Litestar cannot see the request and response types. Each
handler names them with ``operation_class=documented(...)``, and the schemas
msgspec generates for those Structs are written into its operation.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.spec import Operation

from paycore.api.problems import PROBLEM_CONTENT_TYPE
from paycore.api.schemas import Problem

__all__ = ["documented"]

_DEFS = "#/$defs/"


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema msgspec made, with its ``$defs`` references resolved in place.

    Operation schemas cannot point into a local ``$defs``; the API types are not
    recursive, so inlining always ends.
    """
    defs: dict[str, Any] = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(_DEFS):
                return resolve(defs[ref.removeprefix(_DEFS)])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _schema_of(struct_type: type[msgspec.Struct]) -> dict[str, Any]:
    return _inlined(msgspec.json.schema(struct_type))


_PROBLEM_RESPONSE = {
    "description": "An RFC 9457 problem with a stable `code`",
    "content": {PROBLEM_CONTENT_TYPE: {"schema": _schema_of(Problem)}},
}


def documented(
    responses: dict[int, type[msgspec.Struct]],
    body: type[msgspec.Struct] | None = None,
) -> type[Operation]:
    """An ``Operation`` class documenting ``body`` and the JSON ``responses`` by status."""
    request_body = None
    if body is not None:
        request_body = {
            "required": True,
            "content": {"application/json": {"schema": _schema_of(body)}},
        }
    documented_responses: dict[str, Any] = {
        str(status): {
            "description": struct_type.__doc__ or struct_type.__name__,
            "content": {"application/json": {"schema": _schema_of(struct_type)}},
        }
        for status, struct_type in responses.items()
    }
    documented_responses["default"] = _PROBLEM_RESPONSE

    class DocumentedOperation(Operation):
        def to_schema(self) -> dict[str, Any]:
            schema = super().to_schema()
            if request_body is not None:
                schema["requestBody"] = request_body
            schema["responses"] = documented_responses
            return schema

    return DocumentedOperation
