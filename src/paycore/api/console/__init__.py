"""The operator console at ``/console``: server-rendered pages over the same store and
payment service as the API, for ``admin`` keys, within their tenant (see ``pages``)."""

from paycore.api.console.pages import (
    CONSOLE_PATH,
    CSP,
    SESSION_COOKIE,
    console_routes,
    console_templates,
)
from paycore.api.console.sessions import Sessions

__all__ = [
    "CONSOLE_PATH",
    "CSP",
    "SESSION_COOKIE",
    "Sessions",
    "console_routes",
    "console_templates",
]
