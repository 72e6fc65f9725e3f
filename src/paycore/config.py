"""Settings: one TOML file, overridable by ``PAYCORE_*`` environment variables.

With no file at all, paycore runs embedded: one SQLite shard, ``./paycore-data/shard-0.sqlite3``,
no servers. ``embedded_shards = N`` (or ``PAYCORE_EMBEDDED_SHARDS``) splits the 4,096 slots
evenly over N files ``shard-0.sqlite3`` .. ``shard-<N-1>.sqlite3``, with the same semantics
(sagas carry what crosses files). One is the default because, measured on this machine
kind, shards in one process share one interpreter lock and one disk: four of them moved
about half as many local transfers per second as one, and every transfer crossing files
costs three writes instead of one. Sharding pays where shards are separate servers
(PostgreSQL). A data directory that already holds N shard files keeps N.
Environment variables name a scalar setting in upper case, e.g. ``PAYCORE_DATA_DIR``,
``PAYCORE_SYNCHRONOUS``, ``PAYCORE_PORT``; the topology comes from the file only.

The topology, in the file::

    [[shards]]
    name = "s0"
    backend = "postgres"                   # or "sqlite" (then: path = "...")
    dsn = "host=db1,db2 dbname=s0 target_session_attrs=read-write"
    slots = "0-2047"                       # ranges, comma-separated: "0-99, 200-299"
    lock_timeout_seconds = 5               # optional, postgres only: the global default

    [[shards]]
    name = "s1"
    backend = "sqlite"
    path = "data/s1.sqlite3"
    slots = "2048-4095"

    [[placement]]                          # optional: ids with this prefix live on s1
    prefix = "merchant:"
    shard = "s1"

    [[placement]]                          # optional: ids with this prefix live together,
    prefix = "t42:"                        # on the shard of the prefix's own slot

Secrets (a DSN's or ``locks_url``'s password, webhook and processor secrets) may stay
out of the file: ``PAYCORE_SHARD_<NAME>_DSN``, ``PAYCORE_LOCKS_URL``, ``dsn_file = "..."``
and the like (see ``load_settings``); a file that holds one must be ``chmod 600``.

Either every shard has ``slots`` or none has (then the slots are split evenly, in the
order the shards are listed).

Schema migrations: with ``migrate_on_start = true`` (the default, so that the embedded
ledger works on a fresh machine) every shard applies its missing migrations when a node
starts. A cluster usually sets it to false and runs ``paycore migrate --config FILE``
as a deploy step, so that API nodes never change the schema; a node then refuses to
start on a shard that lacks a migration, naming it.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import msgspec

from paycore.ledger.model import DEFAULT_TENANT, is_valid_tenant
from paycore.redaction import secrets_in

__all__ = [
    "EMBEDDED_SHARDS",
    "EventStreamConfig",
    "PlacementConfig",
    "ProcessorConfig",
    "RateLimitConfig",
    "ReconciliationConfig",
    "Settings",
    "ShardConfig",
    "ShardSpec",
    "WebhookEndpointConfig",
    "embedded_shard_count",
    "load_settings",
    "parse_slots",
    "read_secret_file",
    "shard_specs",
]

EMBEDDED_SHARDS = 1
_SHARD_NAME = re.compile(r"[A-Za-z0-9_-]{1,24}")
_BACKENDS = ("sqlite", "postgres")
# PostgreSQL takes lock_timeout in milliseconds as a 32-bit integer.
_MAX_LOCK_TIMEOUT_SECONDS = (2**31 - 1) / 1000


class ShardConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[shards]]`` table: a ledger database and the slots it owns."""

    name: str
    backend: str = "sqlite"
    path: str | None = None
    dsn: str | None = None
    slots: str | None = None
    # Seconds the shard's writer waits for its write turn before answering 503
    # (PostgreSQL only); unset: the global ``lock_timeout_seconds``.
    lock_timeout_seconds: float | None = None


class PlacementConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[placement]]`` table: account ids starting with ``prefix`` live on ``shard``,
    or, without ``shard``, together in the slot of ``prefix`` itself (so they share a shard
    wherever the slot map puts that slot, and move together with it)."""

    prefix: str
    shard: str | None = None


class ProcessorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[processors]]`` table: a payment processor (acquirer/PSP) reached over HTTP.

    ``name`` also names its ledger accounts (``psp:<shard>:<name>:<CUR>``), so it is
    1-24 chars of ``[A-Za-z0-9_-]`` and should never change. ``resilience`` is kept raw
    here (config imports nothing above it) and read by ``paycore.resilience``.
    """

    name: str
    url: str
    timeout_seconds: float = 5.0
    resilience: dict[str, Any] = {}
    # The secret this processor signs its notifications with (``Paycore-Signature``,
    # see ``paycore.payments.webhooks``); None: it cannot post to /v1/processor_events.
    webhook_secret: str | None = None

    def __post_init__(self) -> None:
        if self.webhook_secret is not None and len(self.webhook_secret) < _MIN_SECRET_CHARS:
            raise ValueError(
                f"processor {self.name!r}: webhook_secret needs at least "
                f"{_MIN_SECRET_CHARS} characters"
            )


# Webhook endpoints: a secret shorter than this is refused (HMAC keys should be long).
_MIN_SECRET_CHARS = 16
_EVENT_PATTERN = re.compile(r"\*|[a-z_]{1,40}\.(\*|[a-z_]{1,40})")


class WebhookEndpointConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[webhooks]]`` table: where paycore POSTs its events (see docs/payments.md).

    ``secrets``: the first signs; list the old one after it while rotating (each gets a
    ``v1`` in ``Paycore-Signature``). ``events``: ``"*"``, ``"payment.*"`` or an exact
    type such as ``"refund.succeeded"``. ``url`` is the endpoint's identity in the
    delivery log, so two tables may not share one. ``tenant``: whose events it gets, and
    only those (a payment's and its refunds' are the merchant account's tenant's, a
    payout's the wallet's); ``"default"`` unless said, the tenant of a single-tenant
    setup (``auth = "open"`` and accounts made before tenants existed).
    """

    url: str
    secrets: tuple[str, ...]
    events: tuple[str, ...] = ("*",)
    timeout_seconds: float = 5.0
    tenant: str = DEFAULT_TENANT

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url {self.url!r}: an http:// or https:// URL is needed")
        if not self.secrets:
            raise ValueError(f"webhook {self.url!r}: at least one secret is needed")
        if any(len(s) < _MIN_SECRET_CHARS for s in self.secrets):
            raise ValueError(
                f"webhook {self.url!r}: every secret needs at least {_MIN_SECRET_CHARS} characters"
            )
        bad = [e for e in self.events if not _EVENT_PATTERN.fullmatch(e)]
        if not self.events or bad:
            raise ValueError(
                f"webhook {self.url!r}: events must be '*', 'kind.*' or 'kind.name', not {bad}"
            )
        if not (math.isfinite(self.timeout_seconds) and 0 < self.timeout_seconds <= 60):
            raise ValueError(f"webhook {self.url!r}: timeout_seconds must be in (0, 60]")
        if not is_valid_tenant(self.tenant):
            raise ValueError(
                f"webhook {self.url!r}: tenant must be 1-64 chars of [A-Za-z0-9_.-], "
                f"not {self.tenant!r}"
            )


_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class EventStreamConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``[events]`` table: every ledger and payment change published to NATS
    JetStream by the ``leader:events:<shard>`` job (see docs/events.md). Absent (the
    default): no stream, no NATS needed. ``PAYCORE_EVENTS_NATS_URL`` sets ``nats_url``
    (and so turns the stream on) from the environment.

    ``stream``: the JetStream stream, made (or updated) at start with the subjects
    ``<subject_prefix>.>``; ``duplicate_window_seconds``: how long NATS remembers an
    event id to drop a re-publish (a publisher restarted after a crash within that
    window publishes nothing twice; consumers de-duplicate by id beyond it).
    """

    nats_url: str
    stream: str = "PAYCORE"
    subject_prefix: str = "paycore"
    duplicate_window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    batch_limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.2
    publish_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0
    # The longest pause between two tries while NATS (or the shard) is away.
    retry_max_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0

    def __post_init__(self) -> None:
        if urlsplit(self.nats_url).scheme not in ("nats", "tls"):
            raise ValueError("events: nats_url must be a nats:// or tls:// URL")
        if not _SUBJECT_TOKEN.fullmatch(self.stream):
            raise ValueError("events: stream must be 1-64 chars of [A-Za-z0-9_-]")
        if not all(_SUBJECT_TOKEN.fullmatch(t) for t in self.subject_prefix.split(".")):
            raise ValueError("events: subject_prefix must be dot-separated [A-Za-z0-9_-] tokens")


# The embedded exchange rates (``[fx] rates``): units of the second currency for one of
# the first, as exact decimal strings. Illustrative, not market data; a deployment sets
# its own table or an HTTP source. Each direction is its own rate (a desk's bid and ask).
DEFAULT_FX_RATES: Final[dict[str, str]] = {
    "USD/EUR": "0.92",
    "EUR/USD": "1.08",
    "USD/GBP": "0.79",
    "GBP/USD": "1.26",
    "USD/JPY": "151.5",
    "JPY/USD": "0.0066",
    "EUR/JPY": "164.2",
    "JPY/EUR": "0.0061",
    "USD/KWD": "0.3075",
    "KWD/USD": "3.25",
    "EUR/KWD": "0.333",
    "KWD/EUR": "3.0",
}


class FxConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[fx]``: where exchange rates come from and how long a quote holds (``paycore.fx``).

    ``source = "static"`` quotes from ``rates`` (``"USD/EUR" = "0.92"``: exact decimal
    strings, never floats); ``"http"`` asks ``url`` (``GET <url>/<SELL>`` answering
    ``{"base": "USD", "rates": {"EUR": "0.92"}}``) within ``timeout_seconds``.
    ``spread_bps``: the house's margin on the mid rate, in basis points, for every pair
    but those of ``spreads`` (``"USD/EUR" = 25``).
    """

    source: str = "static"
    rates: dict[str, str] = msgspec.field(default_factory=lambda: dict(DEFAULT_FX_RATES))
    url: str | None = None
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    quote_ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30
    spread_bps: Annotated[int, msgspec.Meta(ge=0, lt=10_000)] = 0
    spreads: dict[str, Annotated[int, msgspec.Meta(ge=0, lt=10_000)]] = {}

    def __post_init__(self) -> None:
        if self.source not in ("static", "http"):
            raise ValueError(f"fx.source must be 'static' or 'http', not {self.source!r}")
        if self.source == "http" and not self.url:
            raise ValueError("fx.source = 'http' needs fx.url")


_PROCESSOR_NAME = re.compile(r"[A-Za-z0-9_-]{1,24}")


class ReconciliationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[reconciliation]``: how settlement reports are matched (``paycore.reconciliation``).

    ``tolerances``: per processor, how many minor units a line's gross may be off ours
    and still match (the difference is booked to fees), e.g. ``[reconciliation.tolerances]``
    ``sim-a = 2``; a processor not named matches to the unit (0). ``grace_days``: how
    late a line may arrive before its capture is ``missing_in_report``.
    ``lock_wait_seconds``: how long an import waits for another import of the same
    processor to finish before it is refused (``import_in_progress``).
    """

    tolerances: dict[str, Annotated[int, msgspec.Meta(ge=0)]] = {}
    grace_days: Annotated[int, msgspec.Meta(ge=0, le=366)] = 1
    lock_wait_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0

    def __post_init__(self) -> None:
        bad = [name for name in self.tolerances if not _PROCESSOR_NAME.fullmatch(name)]
        if bad:
            raise ValueError(
                f"reconciliation.tolerances: {bad[0]!r} is not a processor name "
                "(1-24 chars of [A-Za-z0-9_-])"
            )

    def tolerance(self, processor: str) -> int:
        return self.tolerances.get(processor, 0)


class RateLimitConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One caller's own budget (``[rate_limit_overrides."key:<keyid>"]``)."""

    per_second: Annotated[float, msgspec.Meta(gt=0)]
    burst: Annotated[int, msgspec.Meta(ge=1)]


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every knob of a paycore node, with the embedded defaults."""

    data_dir: str = "paycore-data"
    # SQLite durability: FULL fsyncs every commit (acknowledged = durable); NORMAL
    # may lose the last commits on power loss and is logged loudly when chosen.
    synchronous: str = "FULL"
    host: str = "127.0.0.1"
    port: int = 8000
    # Limits that keep one request from hurting the others.
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch_size: int = 8189
    max_page_size: int = 1000
    # Per-caller rate limit (paycore.api.ratelimit, GCRA): requests a second on average
    # and at once; 0 turns it off. A caller is its API key id (else a hash of its
    # Authorization header, else its address). Shared through Redis when ``locks_url``
    # is Redis (fail open to per-node limits while Redis is down), else per node.
    # ``rate_limit_overrides``: a budget per caller, e.g. ``"key:abc123"``.
    rate_limit_per_second: Annotated[float, msgspec.Meta(ge=0)] = 1000.0
    rate_limit_burst: Annotated[int, msgspec.Meta(ge=1)] = 2000
    rate_limit_overrides: dict[str, RateLimitConfig] = {}
    # How long an Idempotency-Key's answer is kept (hours).
    idempotency_retention_hours: int = 72
    # Background maintenance: expire timed-out holds, purge old idempotency records.
    maintenance_interval_seconds: float = 1.0
    # "api_keys" (the default): every request but health, metrics and docs needs an API
    # key (``paycore keys create``). "open": every request acts for tenant "default" with
    # every scope, for a developer's machine only (``paycore serve --open``); the node
    # says so loudly at start-up and in /readyz.
    auth: str = "api_keys"
    # Cross-shard relay: how often it looks for work when not woken, how long a claim
    # on an outbox row lasts (a crashed relay's rows are retaken after that), and how
    # long a saga may stay open before the auditor calls it stuck.
    relay_interval_seconds: float = 0.5
    relay_lease_seconds: float = 30.0
    saga_stuck_seconds: float = 300.0
    # How long finished cross-shard outbox rows (completed or compensated sagas) are
    # kept before the maintenance worker deletes them (hours); open ones are never.
    outbox_retention_hours: Annotated[int, msgspec.Meta(ge=0)] = 72
    # How long payment events (once delivered or given up; all of them when no webhook
    # endpoint is configured) and processor notifications are kept (hours; 30 days).
    event_retention_hours: Annotated[int, msgspec.Meta(ge=0)] = 720
    # Apply missing schema migrations when a node starts (see the module docstring);
    # false: a node only checks, and ``paycore migrate`` applies them.
    migrate_on_start: bool = True
    # Locks and leader election (paycore.locks): "local" (in-process, the embedded
    # default), "redis://host:port/db", or a PostgreSQL URL/DSN. Every background job
    # (a shard's relay, a shard's maintenance) runs on one node at a time, elected with
    # a lease of ``leader_ttl_seconds`` (a dead leader is replaced within about that);
    # a request with an Idempotency-Key holds the key's lock while it runs (a lease of
    # ``idempotency_lock_seconds``, renewed), so two nodes never both run it.
    # With no [[processors]] and no [[shards]] (the embedded default), card payments and
    # payouts go to two simulated acquirers inside this process ("sim-a", "sim-b": the
    # simulator's test cards apply); false: no processor, card payments answer 503.
    embedded_processors: bool = True
    # Payments' worker (per shard, elected like the others): every this many seconds it
    # resolves payments left ``processing`` for longer than ``payment_resolve_after_seconds``
    # (keep that well above a processor call's timeout and retries) by a status lookup,
    # and cancels authorizations that ran out.
    payment_worker_interval_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 1.0
    payment_resolve_after_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    locks_url: str = "local"
    leader_ttl_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    idempotency_lock_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    # Default for every PostgreSQL shard: how long its writer waits for the shard's
    # write turn (held by another node or a stuck session) before answering 503.
    lock_timeout_seconds: float = 10.0
    # Topology (see the module docstring); empty: the embedded default.
    shards: tuple[ShardConfig, ...] = ()
    placement: tuple[PlacementConfig, ...] = ()
    # None: as many as the data directory already holds, else ``EMBEDDED_SHARDS``.
    embedded_shards: int | None = None
    # Payment processors (``[[processors]]``) and how payments are routed among them
    # (``[routing]``, kept raw here and parsed by ``paycore.payments.routing``).
    processors: tuple[ProcessorConfig, ...] = ()
    routing: dict[str, Any] = {}
    # Outgoing webhooks (``[[webhooks]]``): every payment event is POSTed, signed, to each
    # endpoint of its tenant whose ``events`` match, by the ``leader:webhooks:<shard>`` job.
    webhooks: tuple[WebhookEndpointConfig, ...] = ()
    # The key the signing secrets of webhook endpoints made over HTTP are derived from
    # (``paycore.payments.endpoint_secrets``; the database keeps no secret). Every node
    # of a cluster needs the same one (``PAYCORE_WEBHOOK_SIGNING_KEY``); None: the file
    # ``webhook-signing-key`` in ``data_dir``, made on first use (one machine only).
    webhook_signing_key: str | None = None
    # The event stream (``[events]``, ``EventStreamConfig``); None: off.
    events: EventStreamConfig | None = None
    # Currency exchange (``[fx]``, see ``FxConfig``): quotes and conversions.
    fx: FxConfig = msgspec.field(default_factory=FxConfig)
    # Settlement reports (``[reconciliation]``, see ``ReconciliationConfig``): matching
    # tolerances per processor.
    reconciliation: ReconciliationConfig = msgspec.field(default_factory=ReconciliationConfig)

    def __post_init__(self) -> None:
        if self.webhook_signing_key is not None and len(self.webhook_signing_key) < 32:
            raise ValueError("webhook_signing_key needs at least 32 characters")
        if self.auth not in _AUTH_MODES:
            raise ValueError(f"auth must be one of {_AUTH_MODES}, not {self.auth!r}")


class ShardSpec(msgspec.Struct, frozen=True):
    """A resolved shard: its backend, where it lives, and its slot ranges (inclusive)."""

    name: str
    backend: str
    path: Path | None
    dsn: str | None
    slots: tuple[tuple[int, int], ...]
    lock_timeout_seconds: float = 10.0


def parse_slots(text: str) -> tuple[tuple[int, int], ...]:
    """``"0-99, 200-299, 4095"`` -> ``((0, 99), (200, 299), (4095, 4095))``."""
    ranges = []
    for raw in text.split(","):
        part = raw.strip()
        first, sep, last = part.partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise ValueError(f"bad slot range {part!r}: expected FIRST-LAST") from None
        ranges.append((lo, hi))
    return tuple(ranges)


def _check_lock_timeout(value: float, where: str) -> float:
    """A usable lock timeout: a finite number of seconds above zero that PostgreSQL takes."""
    if not (math.isfinite(value) and 0 < value <= _MAX_LOCK_TIMEOUT_SECONDS):
        raise ValueError(
            f"{where}: lock_timeout_seconds must be above 0 and at most "
            f"{_MAX_LOCK_TIMEOUT_SECONDS:g}, not {value!r}"
        )
    return value


def embedded_shard_count(settings: Settings) -> int:
    """How many SQLite shards the embedded ledger has: ``embedded_shards`` when set,
    else as many as the data directory holds (``shard-0.sqlite3`` on), else one.

    A data directory written with N shards is refused with another count: its accounts
    would be looked for on the wrong files (moving slots is an operator's command)."""
    held = 0
    while (Path(settings.data_dir) / f"shard-{held}.sqlite3").exists():
        held += 1
    n = settings.embedded_shards
    if n is None:
        return held or EMBEDDED_SHARDS
    if n < 1:
        raise ValueError("embedded_shards must be at least 1")
    if (held > 1 and n != held) or (held == 1 and n > 1 and _holds_data(settings.data_dir)):
        raise ValueError(
            f"{settings.data_dir} holds a ledger of {held} shard file(s); embedded_shards = "
            f"{n} would look for its accounts in the wrong files: keep {held}, or start "
            "with an empty data directory"
        )
    return n


def _holds_data(data_dir: str) -> bool:
    """Whether a lone ``shard-0.sqlite3`` already holds accounts (a fresh one may grow
    into any number of shards)."""
    import sqlite3  # noqa: PLC0415 - only for this check

    path = Path(data_dir) / "shard-0.sqlite3"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT 1 FROM accounts LIMIT 1").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return row is not None


def shard_specs(settings: Settings) -> list[ShardSpec]:
    """The shards ``settings`` describes, validated; the embedded default without any."""
    default_lock_timeout = _check_lock_timeout(settings.lock_timeout_seconds, "settings")
    if not settings.shards:
        n = embedded_shard_count(settings)
        bounds = [4096 * i // n for i in range(n + 1)]
        return [
            ShardSpec(
                f"shard-{i}",
                "sqlite",
                Path(settings.data_dir) / f"shard-{i}.sqlite3",
                None,
                ((bounds[i], bounds[i + 1] - 1),),
                default_lock_timeout,
            )
            for i in range(n)
        ]
    with_slots = [s for s in settings.shards if s.slots is not None]
    if with_slots and len(with_slots) != len(settings.shards):
        raise ValueError("either every [[shards]] table has slots, or none has")
    n = len(settings.shards)
    bounds = [4096 * i // n for i in range(n + 1)]
    specs = []
    seen: set[str] = set()
    for i, shard in enumerate(settings.shards):
        if not _SHARD_NAME.fullmatch(shard.name):
            raise ValueError(f"shard name {shard.name!r}: 1-24 chars of [A-Za-z0-9_-]")
        if shard.name in seen:
            raise ValueError(f"shard name {shard.name!r} appears twice")
        seen.add(shard.name)
        if shard.backend not in _BACKENDS:
            raise ValueError(f"shard {shard.name}: backend must be one of {_BACKENDS}")
        path = None
        if shard.backend == "sqlite":
            path = (
                Path(shard.path)
                if shard.path
                else Path(settings.data_dir) / f"{shard.name}.sqlite3"
            )
        elif not shard.dsn:
            raise ValueError(f"shard {shard.name}: a postgres shard needs a dsn")
        lock_timeout = default_lock_timeout
        if shard.lock_timeout_seconds is not None:
            if shard.backend != "postgres":
                raise ValueError(
                    f"shard {shard.name}: lock_timeout_seconds applies to postgres shards only"
                )
            lock_timeout = _check_lock_timeout(shard.lock_timeout_seconds, f"shard {shard.name}")
        slots = (
            parse_slots(shard.slots)
            if shard.slots is not None
            else ((bounds[i], bounds[i + 1] - 1),)
        )
        specs.append(ShardSpec(shard.name, shard.backend, path, shard.dsn, slots, lock_timeout))
    for rule in settings.placement:
        if not rule.prefix:
            raise ValueError("a placement needs a non-empty prefix")
        if rule.shard is not None and rule.shard not in seen:
            raise ValueError(f"placement {rule.prefix!r} names unknown shard {rule.shard!r}")
    return specs


_SCALARS = (str, int, float, bool)
_LATER = ("embedded_shards",)  # scalar settings whose default None is decided at start
# Settings holding a secret, by table: ``(table, field, key of the PAYCORE_ name)``.
_SECRET_FIELDS: Final = (("shards", "dsn"), ("processors", "webhook_secret"))
_SAFE_MODE_BITS: Final = 0o077  # group or others may read, write or run it: refused
_AUTH_MODES = ("api_keys", "open")


def read_secret_file(path: str | Path, *, what: str) -> str:
    """The secret in the file ``path`` (surrounding whitespace dropped), for ``what``.

    Refused, with a clear error, unless it is a regular file that neither its group nor
    others may read or write (``chmod 600``): a secret is only as safe as its file."""
    file = Path(path)
    try:
        info = file.stat()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read secret file {file}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{what}: secret file {file} is not a regular file")
    if info.st_mode & _SAFE_MODE_BITS:
        raise ValueError(
            f"{what}: secret file {file} is open to its group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
        )
    text = file.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{what}: secret file {file} is empty")
    return text


def _env_name(*parts: str) -> str:
    return "PAYCORE_" + "_".join(re.sub(r"[^A-Za-z0-9]", "_", p).upper() for p in parts)


def _secret(
    table: dict[str, Any], field: str, environ: Mapping[str, str], env_name: str, what: str
) -> tuple[bool, Any]:
    """Resolve ``field`` of ``table`` from, by precedence: the environment (``env_name``,
    or a file named by ``env_name_FILE``), then ``<field>_file``, then the value itself.
    Returns whether the value was written inline (in the config file) and the value."""
    file_key = f"{field}_file"
    file_path = table.pop(file_key, None)
    if file_path is not None and field in table:
        raise ValueError(f"{what}: set {field} or {file_key}, not both")
    if env_name in environ:
        return False, environ[env_name]
    if f"{env_name}_FILE" in environ:
        return False, read_secret_file(environ[f"{env_name}_FILE"], what=f"{env_name}_FILE")
    if file_path is not None:
        return False, read_secret_file(str(file_path), what=f"{what}: {file_key}")
    return field in table, table.get(field)


def _inline_secret(field: str, value: Any) -> bool:
    """Whether ``value`` of ``field`` carries a secret (a DSN or URL: only if it holds
    a password)."""
    if value is None:
        return False
    if field in ("dsn", "locks_url"):
        return bool(secrets_in(str(value)))
    return bool(value)


def _resolve_secrets(values: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Fill every secret setting of ``values`` (the file's tables) from the environment
    or its ``*_file``; the names of those written inline in the file."""
    inline = []
    written, url = _secret(values, "locks_url", environ, "PAYCORE_LOCKS_URL", "locks_url")
    if url is not None:
        values["locks_url"] = url
    if written and _inline_secret("locks_url", url):
        inline.append("locks_url")
    for table_name, field in _SECRET_FIELDS:
        for table in values.get(table_name, ()):
            if not isinstance(table, dict):
                continue  # msgspec reports the shape
            name = str(table.get("name", ""))
            what = f"{table_name}[{name}].{field}"
            written, value = _secret(
                table, field, environ, _env_name(table_name[:-1], name, field), what
            )
            if value is not None:
                table[field] = value
            if written and _inline_secret(field, value):
                inline.append(what)
    for index, table in enumerate(values.get("webhooks", ())):
        if not isinstance(table, dict):
            continue
        what = f"webhooks[{index}].secrets"
        env_name = _env_name("webhook", str(index), "secrets")
        file_path = table.pop("secrets_file", None)
        if file_path is not None and "secrets" in table:
            raise ValueError(f"{what}: set secrets or secrets_file, not both")
        if env_name in environ:
            table["secrets"] = [s.strip() for s in environ[env_name].split(",") if s.strip()]
        elif file_path is not None:
            text = read_secret_file(str(file_path), what=f"{what}: secrets_file")
            table["secrets"] = [line.strip() for line in text.splitlines() if line.strip()]
        elif table.get("secrets"):
            inline.append(what)
    return inline


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), then apply ``PAYCORE_*`` overrides of scalar settings.

    Secrets (``locks_url``, a shard's ``dsn``, a processor's ``webhook_secret``, an
    endpoint's ``secrets``) come, first found first: from the environment
    (``PAYCORE_LOCKS_URL``, ``PAYCORE_SHARD_<NAME>_DSN``,
    ``PAYCORE_PROCESSOR_<NAME>_WEBHOOK_SECRET``, ``PAYCORE_WEBHOOK_<N>_SECRETS`` (comma
    separated, N from 0 in file order), or ``<that>_FILE`` naming a file); from
    ``<field>_file`` in the table (``secrets_file``: one per line); or from the file
    itself, which must then be ``chmod 600`` like any secret file (refused otherwise).
    A DSN or URL without a password is no secret.
    """
    values: dict[str, Any] = {}
    if path is not None:
        with Path(path).open("rb") as fh:
            values.update(tomllib.load(fh))
    environ = os.environ if env is None else env
    inline = _resolve_secrets(values, environ)
    if inline and path is not None:
        mode = Path(path).stat().st_mode
        if mode & _SAFE_MODE_BITS:
            raise ValueError(
                f"{path} holds secrets ({', '.join(inline)}) but is open to its group or "
                f"others (mode {stat.S_IMODE(mode):04o}): chmod 600 it, or move them to "
                "PAYCORE_* variables or *_file settings"
            )
    nats_url = environ.get("PAYCORE_EVENTS_NATS_URL")
    if nats_url:
        values["events"] = {**values.get("events", {}), "nats_url": nats_url}
    defaults = Settings()
    for field in msgspec.structs.fields(Settings):
        default = getattr(defaults, field.name)
        # A scalar, or one whose default None means "decided later" (embedded_shards).
        scalar = isinstance(default, _SCALARS) or (default is None and field.name in _LATER)
        if field.name == "locks_url" or not scalar:
            continue  # the topology comes from the file only; locks_url is resolved above
        raw = environ.get(f"PAYCORE_{field.name.upper()}")
        if raw is not None:
            values[field.name] = raw
    # strict=False lets "8000" from the environment become an int, but never a float
    # into an int field.
    return msgspec.convert(values, Settings, strict=False)
