"""The POST routes of an app, read from the app itself (a new route is covered at once),
and how to call each: path parameters filled in, a processor's notification signed."""

from __future__ import annotations

import re
import time
from typing import Any

from litestar import Litestar

from paycore.config import ProcessorConfig
from paycore.payments.webhooks import SIGNATURE_HEADER, signature_header

__all__ = ["PROCESSOR", "PROCESSOR_SECRET", "concrete", "post_routes", "signed_headers"]

PROCESSOR_SECRET = "whsec_routes_0123456789abcdef"
PROCESSOR = ProcessorConfig("acq", "http://127.0.0.1:9", webhook_secret=PROCESSOR_SECRET)

# What each path parameter is filled with: ids that exist in the tests' setups or not,
# as a handler must answer either way.
_FILL = {
    "account_id": "a1",
    "transfer_id": "t-held",
    "payment_id": "pay_1",
    "processor": PROCESSOR.name,
    "key_id": "0123456789abcdef",
    "endpoint_id": "we_000000000000000000000000",
    "delivery_id": "evt_1",
    "conversion_id": "fxc_000000000000000000000000",
    "exception_id": "rx_000000000000000000000000",
}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def post_routes(app: Litestar) -> list[str]:
    """Every route template of the JSON API that takes POST, sorted (none is left out or
    hard-coded). The console's HTML forms (``/console/...``) answer HTML and have their
    own tests (``test_console.py``: CSRF, hostile input, no 5xx)."""
    return sorted(
        route.path
        for route in app.routes
        if "POST" in getattr(route, "methods", ()) and not route.path.startswith("/console")
    )


def concrete(template: str, **fill: str) -> str:
    """``template`` with its path parameters filled in."""
    values = {**_FILL, **fill}
    return _PARAM.sub(lambda m: values[m.group(1)], template)


def signed_headers(template: str, body: bytes) -> dict[str, str]:
    """The signature a processor's notification carries (other routes: none)."""
    if "{processor" not in template:
        return {}
    return {SIGNATURE_HEADER: signature_header([PROCESSOR_SECRET], body, now=int(time.time()))}


def json_headers(template: str, body: bytes, **extra: Any) -> dict[str, str]:
    return {"content-type": "application/json", **signed_headers(template, body), **extra}
