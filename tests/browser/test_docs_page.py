"""/docs as a browser shows it: headless Chromium, with every name but 127.0.0.1
unresolvable, renders the operations from files paycore serves, and the page asks
nothing of any other host. A screenshot is kept in tests/artifacts/."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from paycore.tools.browser import Chromium

pytestmark = pytest.mark.slow

# Any name but 127.0.0.1 fails to resolve: a CDN, a font or a validator cannot load.
_OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
_TIMEOUT = 120
# Operations, each by its path and its summary, as Swagger UI shows them.
_OPERATIONS = [
    ("/v1/transfers", "CreateTransfer"),
    ("/v1/transfers/{transfer_id}/post", "PostPending"),
    ("/v1/accounts", "CreateAccount"),
    ("/v1/payments/{payment_id}/capture", "CapturePayment"),
    ("/v1/webhook_endpoints", "CreateWebhookEndpoint"),
]
_PAGE_FILES = {
    "/docs/assets/swagger-ui.css",
    "/docs/assets/swagger-ui-bundle.js",
    "/docs/assets/paycore-docs.js",
    "/docs/openapi.json",
}


def _browse(chromium: Chromium, profile: Path, *args: str) -> str:
    """Run headless Chromium offline (``_OFFLINE``) with ``args``; its stdout."""
    done = chromium.run(
        [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            _OFFLINE,
            "--virtual-time-budget=15000",
            *args,
        ],
        timeout=_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def _page_requests(net_log: Path) -> list[tuple[str, str]]:
    """(initiator, URL) of each request a page made, from Chromium's net log (the
    browser's own background requests have no page as initiator)."""
    log: dict[str, Any] = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        (event["params"]["initiator"], event["params"]["url"])
        for event in log["events"]
        if event["type"] == start_job
        and event.get("params", {}).get("initiator", "not an origin") != "not an origin"
    ]


def test_docs_render_the_operations_offline(
    chromium: Chromium, docs_server: str, artifacts: Path, tmp_path: Path
) -> None:
    """The rendered page shows the operations (paths and summaries) and their tags,
    loaded from this server alone: every request the page made went to it."""
    net_log = tmp_path / "net-log.json"
    dom = _browse(
        chromium, tmp_path / "profile", f"--log-net-log={net_log}", "--dump-dom",
        f"{docs_server}/docs",
    )  # fmt: skip
    (artifacts / "docs-dom.html").write_text(dom)
    print(f"rendered DOM of /docs: {artifacts / 'docs-dom.html'}")
    # Swagger UI's own markup, made by its script from the document: not in the page
    # paycore sends (an empty <div id="swagger-ui">), so the script ran and rendered.
    rendered_paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    summaries = set(re.findall(r'class="opblock-summary-description">([^<]+)<', dom))
    for path, summary in _OPERATIONS:
        assert path in rendered_paths, path
        assert summary in summaries, summary
    assert len(rendered_paths) >= 30
    assert 'data-tag="transfers"' in dom
    assert "Failed to load API definition" not in dom

    origin = urlsplit(docs_server)
    requests = _page_requests(net_log)
    for initiator, url in requests:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), (initiator, url)
    assert {urlsplit(url).path for _, url in requests} >= _PAGE_FILES


def test_docs_screenshot_is_kept(
    chromium: Chromium, docs_server: str, artifacts: Path, tmp_path: Path
) -> None:
    """A screenshot of the rendered page is written to tests/artifacts/docs.png."""
    screenshot = artifacts / "docs.png"
    screenshot.unlink(missing_ok=True)
    _browse(
        chromium, tmp_path / "profile", "--window-size=1280,2000",
        f"--screenshot={screenshot}", f"{docs_server}/docs",
    )  # fmt: skip
    print(f"screenshot of /docs: {screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 50_000  # a rendered page, not a blank one
