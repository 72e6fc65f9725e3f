"""Passwords out of anything printed: DSNs, URLs, error texts.

``redact_dsn`` (alias ``redact_url``) masks the password of every shape paycore is
given, leaving the rest readable::

    postgresql://u:***@h1:5432,h2:5433/db?sslpassword=***     libpq URI, multi-host
    host=db1,db2 user=u password=*** dbname=l                 libpq key=value (quoted too)
    redis://:***@h:6379/0   rediss://u:***@h/0?password=***   Redis URLs
    unix:///run/redis.sock?password=***

It is lenient on purpose: a text that looks odd may be masked more than needed, never
less (``password s3cret`` without the ``=``, which libpq refuses, is masked too).
``redact_text`` is for free text (an exception's message): it masks URLs' user
passwords and ``password=...`` wherever they appear, and every secret it is given
(``secrets_in(dsn)``: the passwords written in a DSN, raw and unquoted/unescaped), so an
error that quotes a password still shows none.

Pure: no I/O, no import above the standard library (config and storage use it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote

__all__ = ["MASK", "redact_dsn", "redact_text", "redact_url", "secrets_in"]

MASK: Final = "***"
# ``password=...`` / ``sslpassword=...`` in a key=value DSN or a URL's query string;
# the value quoted ('a b\' c') or not (up to a space or ``&``).
_PASSWORD_PARAM: Final = re.compile(
    r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]*)", re.IGNORECASE
)
# In a DSN only: ``password s3cret`` (no ``=``: refused by libpq, whose error quotes it).
_PASSWORD_WORD: Final = re.compile(r"(\b(?:ssl)?password\s+)([^\s=&]+)", re.IGNORECASE)
# A URL's user-info (``scheme://user:password@``), up to the last ``@`` of the authority.
_URL_USERINFO: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^\s/?#]*)@")
# Shorter secrets are not scrubbed from free text (they would mask ordinary words);
# they are still masked wherever a DSN or URL holds them.
_MIN_SCRUB: Final = 4


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match.group(1), match.group(2)
    if ":" not in userinfo:
        return match.group(0)
    user = userinfo.partition(":")[0]
    return f"{scheme}{user}:{MASK}@"


def _mask_param(match: re.Match[str]) -> str:
    return match.group(1) + MASK if match.group(2) else match.group(0)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords, ``password=`` values and each of ``secrets`` masked."""
    for secret in sorted(set(secrets), key=len, reverse=True):  # longest first
        if len(secret) >= _MIN_SCRUB:
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    return _PASSWORD_PARAM.sub(_mask_param, text)


def redact_dsn(dsn: str) -> str:
    """``dsn`` (a libpq URI or key=value string, a Redis URL, any URL) with every
    password masked; a DSN without one is returned unchanged."""
    return _PASSWORD_WORD.sub(lambda m: m.group(1) + MASK, redact_text(dsn))


redact_url = redact_dsn


def secrets_in(dsn: str) -> list[str]:
    """The passwords written in ``dsn`` (raw, unquoted, percent-decoded), to scrub them
    from error texts that quote them (``redact_text(text, secrets_in(dsn))``)."""
    found: list[str] = []
    for match in _PASSWORD_PARAM.finditer(dsn):
        raw = match.group(2)
        unquoted = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == "'" else raw
        found += [raw, unquoted, unquoted.replace("\\'", "'").replace("\\\\", "\\"), unquote(raw)]
    for match in _PASSWORD_WORD.finditer(dsn):
        found.append(match.group(2))
    for match in _URL_USERINFO.finditer(dsn):
        password = match.group(2).partition(":")[2]
        found += [password, unquote(password)]
    return sorted({s for s in found if s}, key=len, reverse=True)
