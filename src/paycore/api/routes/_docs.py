"""OpenAPI documentation for handlers that decode their own bodies.

The handlers read raw bytes and decode them with msgspec's strict decoder
(Litestar's ``data`` parameter converts leniently and would accept ``"100"``
for an amount), so Litestar cannot see the request and response types. Each
handler names them with ``operation_class=documented(...)``. msgspec generates
the schemas of every type so named, all at once (one name per type), as the
document's ``components.schemas`` (``schema_components``, which
``paycore.api.openapi`` writes into it); an operation points at them with
``$ref``. A POST that honours an ``Idempotency-Key`` says so
(``idempotency_key=True``) and gets the header parameter
``#/components/parameters/IdempotencyKey``.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import msgspec
from litestar.openapi.spec import Operation

from paycore.api.problems import PROBLEM_CONTENT_TYPE
from paycore.api.schemas import Problem

__all__ = [
    "IDEMPOTENCY_KEY_PARAMETER",
    "documented",
    "documented_types",
    "problem_schema_ref",
    "schema_components",
]

IDEMPOTENCY_KEY_PARAMETER: Final = "IdempotencyKey"
"""The name of the ``Idempotency-Key`` header in ``components.parameters``."""

_SCHEMA_REF: Final = "#/components/schemas/{name}"

# Every type an operation documents, in the order first named.
_documented: list[type[msgspec.Struct]] = [Problem]


def _register(struct_type: type[msgspec.Struct]) -> None:
    if struct_type not in _documented:
        _documented.append(struct_type)


@functools.cache
def _generate(
    types: tuple[type[msgspec.Struct], ...],
) -> tuple[dict[type[msgspec.Struct], dict[str, Any]], dict[str, Any]]:
    refs, components = msgspec.json.schema_components(types, ref_template=_SCHEMA_REF)
    return dict(zip(types, refs, strict=True)), components


def schema_components() -> dict[str, Any]:
    """The JSON schemas of every documented type, by component name (msgspec's)."""
    return _generate(tuple(_documented))[1]


def documented_types() -> dict[str, type[msgspec.Struct]]:
    """Each documented type by the ``$ref`` that points at its schema."""
    refs = _generate(tuple(_documented))[0]
    return {ref["$ref"]: struct_type for struct_type, ref in refs.items()}


def _ref(struct_type: type[msgspec.Struct]) -> dict[str, Any]:
    return _generate(tuple(_documented))[0][struct_type]


def problem_schema_ref() -> dict[str, Any]:
    """The ``$ref`` of the problem+json body's schema."""
    return _ref(Problem)


def documented(
    responses: dict[int, type[msgspec.Struct]],
    body: type[msgspec.Struct] | None = None,
    *,
    idempotency_key: bool = False,
) -> type[Operation]:
    """An ``Operation`` class documenting ``body`` and the JSON ``responses`` by status;
    ``idempotency_key``: the operation honours an ``Idempotency-Key`` header."""
    for struct_type in (*responses.values(), *([body] if body is not None else [])):
        _register(struct_type)

    class DocumentedOperation(Operation):
        def to_schema(self) -> dict[str, Any]:
            # Made when the document is, once every handler has named its types.
            schema = super().to_schema()
            if body is not None:
                schema["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(body)}},
                }
            documented_responses: dict[str, Any] = {
                str(status): {
                    "description": struct_type.__doc__ or struct_type.__name__,
                    "content": {"application/json": {"schema": _ref(struct_type)}},
                }
                for status, struct_type in responses.items()
            }
            documented_responses["default"] = {
                "description": "An RFC 9457 problem with a stable `code`",
                "content": {PROBLEM_CONTENT_TYPE: {"schema": _ref(Problem)}},
            }
            schema["responses"] = documented_responses
            if idempotency_key:
                parameter = {"$ref": f"#/components/parameters/{IDEMPOTENCY_KEY_PARAMETER}"}
                schema["parameters"] = [*schema.get("parameters", []), parameter]
            return schema

    return DocumentedOperation
