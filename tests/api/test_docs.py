"""/docs works offline (every file of the page is served by paycore) and the OpenAPI
document declares what a generated client needs: the Bearer key, the Idempotency-Key
header, reusable body schemas, a description per operation."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from litestar.testing import AsyncTestClient

from api.conftest import ClientFactory
from api.support import resolve_refs

BEARER: list[dict[str, list[str]]] = [{"BearerAuth": []}]
IDEMPOTENCY_KEY = {"$ref": "#/components/parameters/IdempotencyKey"}
# The POSTs whose handlers honour an Idempotency-Key (WriteExecutor.run or the payment
# routes' keys); a processor's notification is kept once per event id instead.
KEYED_POSTS = {
    "/v1/accounts",
    "/v1/accounts/{account_id}/close",
    "/v1/transfers",
    "/v1/transfers/batch",
    "/v1/transfers/{transfer_id}/post",
    "/v1/transfers/{transfer_id}/void",
    "/v1/payments",
    "/v1/payments/{payment_id}/capture",
    "/v1/payments/{payment_id}/cancel",
    "/v1/refunds",
    "/v1/payouts",
    "/v1/api_keys",
    "/v1/api_keys/{key_id}/rotate",
    "/v1/webhook_endpoints",
    "/v1/webhook_endpoints/{endpoint_id}/rotate_secret",
    "/v1/webhook_endpoints/{endpoint_id}/test",
    "/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    "/v1/fx/quotes",
    "/v1/fx/conversions",
    "/v1/fx/conversions/{conversion_id}/capture",
    "/v1/fx/conversions/{conversion_id}/void",
    "/v1/reconciliation/reports",
    "/v1/reconciliation/exceptions/{exception_id}/resolve",
}
NO_KEY_NEEDED = {"/v1/processor_events/{processor}"}  # signed by the processor
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}


class _Urls(HTMLParser):
    """Every URL an element of the page names (src, href), with its tag."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append((tag, value))


@pytest.fixture
async def keyed_client(open_client: ClientFactory) -> Any:
    """An app that needs API keys: the docs must be served without one."""
    async with open_client(auth="api_keys") as client:
        yield client


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


async def test_docs_page_names_only_assets_paycore_serves(keyed_client: Any) -> None:
    """The page's scripts, stylesheet and icon are paths on this server, each served
    without a key with its content type; nothing on the page points elsewhere."""
    page = await keyed_client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text
    assert "https://" not in page.text
    parser = _Urls()
    parser.feed(page.text)
    tags = sorted(tag for tag, _ in parser.urls)
    assert tags == ["link", "link", "script", "script"], parser.urls
    for _, url in parser.urls:
        parts = urlsplit(url)
        assert not parts.scheme, url
        assert not parts.netloc, url
        assert url.startswith("/docs/assets/"), url
        asset = await keyed_client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert asset.headers["content-type"] == CONTENT_TYPES[suffix], url
        assert asset.content, url
    # Swagger UI's licence ships beside it.
    licence = await keyed_client.get("/docs/assets/LICENSE")
    assert licence.status_code == 200
    assert "Apache License" in licence.text


async def test_docs_script_loads_the_document_from_this_server(
    client: AsyncTestClient[Any],
) -> None:
    """The page's own script reads /docs/openapi.json, with the online validator off."""
    script = (await client.get("/docs/assets/paycore-docs.js")).text
    assert '"url":"/docs/openapi.json"' in script
    assert '"validatorUrl":null' in script
    assert "http" not in script
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.text


async def test_docs_assets_outside_the_list_are_404(client: AsyncTestClient[Any]) -> None:
    """Only the page's files are served, not the rest of the package's folder."""
    for name in ("swagger-editor-bundle.js", "index.html", "..%2Fcore.py", "x"):
        assert (await client.get(f"/docs/assets/{name}")).status_code == 404, name


async def test_openapi_declares_the_bearer_key_on_v1_operations(document: dict[str, Any]) -> None:
    """The Bearer API key is a security scheme, required by every /v1 operation but a
    processor's signed notification, and by none of /healthz, /readyz."""
    scheme = document["components"]["securitySchemes"]["BearerAuth"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert "pk_live_" in scheme["description"]
    assert "security" not in document  # not global: the ops endpoints need no key
    seen = 0
    for method, path, operation in _operations(document):
        if path.startswith("/v1/") and path not in NO_KEY_NEEDED:
            assert operation.get("security") == BEARER, (method, path)
            seen += 1
        else:
            assert "security" not in operation, (method, path)
    assert seen >= 18
    assert {"/healthz", "/readyz"} <= set(document["paths"])


async def test_openapi_declares_the_idempotency_key_on_keyed_posts(
    document: dict[str, Any],
) -> None:
    """Every POST under /v1 that honours an Idempotency-Key declares the header (with
    its rules); no other operation does."""
    parameter = document["components"]["parameters"]["IdempotencyKey"]
    assert parameter["name"] == "Idempotency-Key"
    assert parameter["in"] == "header"
    assert parameter["required"] is False
    assert parameter["schema"]["maxLength"] == 255
    for words in (
        "idempotency_key_reused",
        "idempotency_key_in_use",
        "Idempotent-Replayed",
        "kept 72 h",  # Settings.idempotency_retention_hours
    ):
        assert words in parameter["description"]
    keyed = set()
    for method, path, operation in _operations(document):
        if IDEMPOTENCY_KEY in operation.get("parameters", []):
            assert method == "post", path
            keyed.add(path)
    assert keyed == KEYED_POSTS
    posts = {path for method, path, _ in _operations(document) if method == "post"}
    assert posts - keyed == NO_KEY_NEEDED


async def test_openapi_bodies_are_reusable_components(document: dict[str, Any]) -> None:
    """Request and response bodies point at components.schemas, which define them."""
    components = document["components"]["schemas"]
    for name in ("AccountIn", "AccountOut", "TransferIn", "TransferOut", "PaymentIn", "Problem"):
        assert name in components, name
    bodies = 0
    for method, path, operation in _operations(document):
        contents = [response["content"] for response in operation["responses"].values()] + (
            [operation["requestBody"]["content"]] if "requestBody" in operation else []
        )
        for content in contents:
            for media in content.values():
                ref = media["schema"]["$ref"]
                assert ref.startswith("#/components/schemas/"), (method, path)
                assert ref.rsplit("/", 1)[1] in components, (method, path, ref)
                bodies += 1
    assert bodies > 40
    transfer_in = resolve_refs(components["TransferIn"], document)
    assert transfer_in["properties"]["amount"]["maximum"] == 2**63 - 1


async def test_every_operation_has_a_description(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        assert operation.get("description", "").strip(), (method, path)


async def test_openapi_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    """schemathesis validates it against the OpenAPI 3.1 meta-schema."""
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()
