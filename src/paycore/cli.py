"""The ``paycore`` command: ``demo``, ``serve``, ``keys``, ``worker``, ``events``, ``audit``,
``migrate``, ``bench``, ``reconcile``.

Each sub-command parses its options here, then runs an async core from
``paycore.ops`` (operator commands) or ``paycore.tools`` (demo, bench, local cluster)
under ``asyncio.run``; ``main`` returns the exit status
(0 fine, 1 a promise broken or a target missed where that fails the command,
2 a usage or environment problem).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from rich.console import Console

from paycore import logs
from paycore.config import Settings, load_settings

if TYPE_CHECKING:
    from paycore.api.console.audit_runs import Auditor

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``paycore`` script; returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # Every line of the process (paycore's, uvicorn's, the libraries') in one format.
    logs.configure(
        getattr(args, "log_level", "warning"),
        getattr(args, "log_format", "console"),
        access_log=getattr(args, "access_log", False),
    )
    status: int = args.handler(args)
    return status


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="info",
        choices=[*logs.LEVELS, "warn", "trace"],
        help="log level (info; warning drops the access log)",
    )
    parser.add_argument(
        "--log-format",
        default="console",
        choices=logs.FORMATS,
        help="console: aligned key=value lines; json: one object per line (console)",
    )


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="run a concurrent wallet workload on a fresh embedded ledger, then audit it",
        description="Create wallets, a merchant and a funding account on a fresh data dir, "
        "run a concurrent mixed workload through the HTTP API in-process, then print "
        "throughput, latency and the audit. Exits 1 if any promise is broken.",
    )
    demo.add_argument("--data-dir", type=Path, help="default: ./paycore-data/demo-<timestamp>")
    demo.add_argument("--wallets", type=int, default=2000, help="number of wallets (2000)")
    demo.add_argument("--clients", type=int, default=64, help="concurrent clients (64)")
    demo.add_argument("--duration", type=float, default=10.0, help="workload seconds (10)")
    demo.add_argument(
        "--synchronous", default="FULL", help="SQLite synchronous: FULL (default) or NORMAL"
    )
    demo.add_argument("--seed", type=int, default=None, help="random seed (reproducible mix)")
    demo.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    demo.add_argument(
        "--no-payments",
        dest="payments",
        action="store_false",
        help="skip the payments act (card payments through 3 simulated processors, one of "
        "which goes down midway)",
    )
    demo.add_argument(
        "--payments-duration", type=float, default=14.0, help="payments act seconds (14)"
    )
    demo.add_argument(
        "--payment-clients", type=int, default=16, help="payments act concurrent clients (16)"
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="afterwards, keep serving the demo's ledger (API and /console, auth open, "
        "127.0.0.1 only) until Ctrl-C",
    )
    demo.add_argument("--port", type=int, default=8000, help="port for --serve (8000)")
    demo.set_defaults(handler=_demo)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paycore", description="A payment core: double-entry ledger, API and tools."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_demo(sub)

    _add_serve_parser(sub)

    _add_keys_parser(sub)
    _add_events_parser(sub)
    _add_reconcile_parser(sub)

    worker = sub.add_parser(
        "worker",
        help="run the background jobs only (relay, maintenance), under leader election",
        description="Open the shards and the lock service (locks_url) of the settings and "
        "run every background job this node is elected for; SIGTERM steps down and exits 0.",
    )
    worker.add_argument("--config", type=Path, help="TOML settings file")
    worker.add_argument("--data-dir", help="override the data directory")
    _add_log_options(worker)
    worker.set_defaults(handler=_worker)

    audit = sub.add_parser(
        "audit",
        help="check every ledger invariant on a data directory; exits 1 on any violation",
        description="Check every promise of the ledger on one consistent snapshot per shard: "
        "money conserved per currency, transfers well formed, counters equal to a replay of "
        "the history, limits never exceeded, holds resolved once and none overdue, balance "
        "history and hash chain intact; across shards, money conserved, clearing accounts "
        "holding exactly the transfers in flight, and no saga open past --stuck. Exits 0 "
        "when clean, 1 on any violation, 2 when there is no ledger or the checkpoint cannot "
        "be read.",
    )
    where = audit.add_mutually_exclusive_group()
    where.add_argument("--data-dir", help="data directory (default: the settings' one)")
    where.add_argument("--config", type=Path, help="TOML settings file")
    audit.add_argument("--json", action="store_true", help="print the report as JSON only")
    audit.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="seconds a hold may stay pending past its timeout (60)",
    )
    audit.add_argument(
        "--max-violations",
        type=_count,
        default=1000,
        metavar="N",
        help="list at most N violations per shard (1000); all are counted, and any fails the audit",
    )
    audit.add_argument(
        "--checkpoint",
        type=Path,
        metavar="FILE",
        help="verify each shard's history chain still passes through the head recorded in "
        "FILE, then record the heads verified now (keep FILE where the database's writers "
        "cannot change it; see docs/audit-trail.md)",
    )
    audit.add_argument(
        "--metrics-file",
        type=Path,
        metavar="FILE",
        help="also write the outcome to FILE in node_exporter's textfile format "
        "(paycore_audit_violations, for the alert rules; see docs/observability.md)",
    )
    audit.add_argument(
        "--stuck",
        type=float,
        default=None,
        help="seconds a cross-shard transfer may stay open (default: saga_stuck_seconds)",
    )
    audit.set_defaults(handler=_audit)

    migrate = sub.add_parser(
        "migrate",
        help="apply the schema migrations to every shard of the topology",
        description="Apply the missing schema migrations to every shard (SQLite files and "
        "PostgreSQL databases) and print what each got. Exits 0 when every shard is up to "
        "date, 1 when a shard could not be migrated (the others still are), 2 on a bad "
        "config. Nodes run with migrate_on_start = false expect this as a deploy step.",
    )
    migrate.add_argument("--config", type=Path, help="TOML settings file")
    migrate.add_argument("--data-dir", help="override the data directory")
    migrate.add_argument(
        "--dry-run", action="store_true", help="list what would be applied; change nothing"
    )
    migrate.set_defaults(handler=_migrate)

    from paycore.payments.processors.simulator.config import (  # noqa: PLC0415
        add_arguments as add_simulator_arguments,
    )

    acquirer_sim = sub.add_parser(
        "acquirer-sim",
        help="serve a simulated card acquirer over HTTP (test cards, latency, faults, outages)",
        description="A test double of a card processor: authorize, capture, void, refund, "
        "payout and status by our reference, idempotent, with test cards that decline, fail "
        "or time out, and a behaviour (latency, error and timeout rates, outages) changed at "
        "run time by PUT /admin/config. Prints its URL on stdout once listening. The test "
        "cards: see paycore.payments.processors.simulator.",
    )
    add_simulator_arguments(acquirer_sim)
    acquirer_sim.set_defaults(handler=_acquirer_sim)

    _add_chaos(sub)

    from paycore.tools.bench.options import add_arguments  # noqa: PLC0415 - keeps start-up light

    bench = sub.add_parser(
        "bench",
        help="measure transfers/s and latency in-process and over HTTP",
        description="Benchmarks (a) in-process batches, (b) HTTP single transfers from a "
        "separate load-generator process against a `paycore serve` subprocess, (c) a "
        "hot-account variant of both, (d) the server's peak RSS; compares with targets. "
        "--report DIR writes a markdown table and PNG charts beside DIR's previous report.",
    )
    add_arguments(bench)
    bench.set_defaults(handler=_bench)

    _add_cluster_parser(sub)
    return parser


def _count(text: str) -> int:
    """An argparse type: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, not {text!r}")
    return value


def _add_cluster_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from paycore.tools.local_cluster.commands import add_arguments as add_cluster_arguments  # noqa: PLC0415

    cluster = sub.add_parser(
        "cluster",
        help="a local HA cluster: Patroni/etcd PostgreSQL shards, Redis, nginx, API nodes",
        description="Start, stop and inspect a complete local cluster from the [cluster] "
        "table of a config file, as real processes in one data directory; 'drill' breaks "
        "parts of it under write load and measures. Nothing is installed: a missing "
        "program is named with the package that provides it ('cluster tools install' "
        "fetches them into a tools directory).",
    )
    add_cluster_arguments(cluster)
    cluster.set_defaults(handler=_cluster)


def _cluster(args: argparse.Namespace) -> int:
    from paycore.tools.local_cluster.commands import run  # noqa: PLC0415

    return run(args)


def _add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the HTTP API (uvicorn, uvloop, httptools)",
        description="Serve the HTTP API (/v1, OpenAPI at /docs, /healthz, /readyz, /metrics) "
        "and the operator console (/console, for admin keys) "
        "over the shards of the settings, with the background jobs (relay, expiry, "
        "maintenance, payments) this node is elected for. With no config: the embedded "
        "default, one SQLite shard in ./paycore-data (PAYCORE_EMBEDDED_SHARDS=N for N), "
        "in-process locks and two simulated "
        "acquirers. API keys are required (see `paycore keys create`) unless --open. "
        "SIGTERM stops it; requests still running 10 s later are cut off. "
        "--workers N runs N such nodes as processes on one port (uvicorn's supervisor; "
        "the kernel gives each connection to one of them), for a machine with several "
        "cores: only over PostgreSQL shards with Redis or PostgreSQL locks and processors "
        "over HTTP (else refused, exit 2, saying why); each worker keeps its own console "
        "sessions and /metrics.",
    )
    serve.add_argument("--config", type=Path, help="TOML settings file")
    serve.add_argument("--data-dir", help="override the data directory")
    serve.add_argument("--host", help="override the listen address")
    serve.add_argument("--port", type=int, help="override the port")
    _add_log_options(serve)
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="one log line per request (method, path, status, duration, request id, tenant)",
    )
    serve.add_argument(
        "--open",
        action="store_true",
        help="serve WITHOUT API keys (every request acts for tenant 'default' with every "
        "scope): a developer's machine only",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="N worker processes on the same host:port, each a full node (its own store "
        "connections, lock client, elections, metrics and console sessions); uvicorn's "
        "supervisor restarts one that dies, and one that cannot start stops them all "
        "(exit 3); 1: one process. N > 1 is refused, exit 2, "
        "unless every shard is PostgreSQL, locks_url is Redis or PostgreSQL (not 'local') "
        "and payments go to processors over HTTP (not the embedded simulated acquirers)",
    )
    serve.set_defaults(handler=_serve)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    shards = sub.add_parser(
        "shards",
        help="the slot map and each shard's rows and size",
        description="Shard commands. `status`: which slots each shard holds (from the "
        "settings' [[shards]] and [[placement]]), and each shard's accounts, transfer rows, "
        "unfinished cross-shard transfers and size. A missing SQLite file is shown, not "
        "created.",
    )
    shard_actions = shards.add_subparsers(dest="action", metavar="ACTION", required=True)
    shards_status = shard_actions.add_parser(
        "status",
        help="slots, rows and size per shard",
        description="Print the slot map and each shard's usage.",
    )
    where = shards_status.add_mutually_exclusive_group()
    where.add_argument("--data-dir", help="data directory (default: the settings' one)")
    where.add_argument("--config", type=Path, help="TOML settings file")
    shards_status.add_argument("--json", action="store_true", help="print the report as JSON")
    shards_status.set_defaults(handler=_shards_status)
    shards_move = shard_actions.add_parser(
        "move",
        help="move a slot range to another shard while serving",
        description="Move slots A-B (all on one shard) to SHARD: fence them on their shard, "
        "let what is in flight on them end, copy their accounts, history, idempotency "
        "records and transfer-id bindings, switch the map (docs/resharding.md). Run it "
        "again after a crash to resume; --abort rolls back a move that has not switched. "
        "Exit 1 when the slots cannot move now (e.g. a pending hold on one of their "
        "accounts: the move is rolled back), 2 on bad arguments.",
    )
    shards_move.add_argument("--slots", help="slot range, e.g. 0-511 (or one slot)")
    shards_move.add_argument("--to", dest="target", help="the shard that takes the slots")
    shards_move.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for work in flight (30)"
    )
    shards_move.add_argument("--abort", action="store_true", help="roll back the unfinished move")
    shards_add = shard_actions.add_parser(
        "add",
        help="add a shard and move it its share of the slots",
        description="Give shard NAME an even share of the slots by moves from the shards "
        "holding the most. A PostgreSQL or named SQLite shard must first be listed in the "
        "settings' [[shards]] (every node needs its dsn or path); on the embedded layout "
        "NAME is omitted and the next file shard-<N>.sqlite3 is created. --plan prints the "
        "moves without acting.",
    )
    shards_add.add_argument("--name", help="the shard (a [[shards]] name in the settings)")
    shards_add.add_argument("--plan", action="store_true", help="print the moves only")
    shards_add.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for work in flight (30)"
    )
    for action in (shards_move, shards_add):
        where = action.add_mutually_exclusive_group()
        where.add_argument("--data-dir", help="data directory (default: the settings' one)")
        where.add_argument("--config", type=Path, help="TOML settings file")
    shards_move.set_defaults(handler=_shards_move)
    shards_add.set_defaults(handler=_shards_add)

    keys = sub.add_parser(
        "keys",
        help="create, list, revoke or rotate API keys",
        description="API keys (Authorization: Bearer <key>) are bound to one tenant and a "
        "set of scopes (read, write, admin). A new key is printed once; only its hash is "
        "kept. Exits 2 on bad input (unknown key, bad tenant or scopes, bad config).",
    )
    keys.set_defaults(handler=_keys, action=None, keys_parser=keys)
    key_actions = keys.add_subparsers(dest="action", metavar="ACTION")
    for name, text in (
        ("create", "create a key for a tenant; prints it once"),
        ("list", "list the keys (never their secrets)"),
        ("revoke", "revoke a key at once"),
        ("rotate", "create a new key with the same tenant and scopes, revoke the old one"),
    ):
        action = key_actions.add_parser(name, help=text, description=text)
        action.add_argument("--config", type=Path, help="TOML settings file")
        action.add_argument("--data-dir", help="override the data directory")
        action.set_defaults(handler=_keys)
        if name == "create":
            action.add_argument("--tenant", required=True, help="the tenant the key acts for")
            action.add_argument(
                "--scopes", default="read,write", help="comma-separated: read, write, admin"
            )
            action.add_argument(
                "--expires-in-days", type=int, default=None, help="default: never expires"
            )
        if name in ("revoke", "rotate"):
            action.add_argument("key_id", metavar="ID", help="the key's id (see `keys list`)")
        if name == "rotate":
            action.add_argument(
                "--grace-seconds",
                type=int,
                default=0,
                help="keep the old key valid this long (default 0: revoke it at once)",
            )


def _add_reconcile_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recon = sub.add_parser(
        "reconcile",
        help="import a processor's settlement report; list and resolve its exceptions",
        description="Match a settlement report (CSV, docs/reconciliation.md) against the "
        "ledger's captures and refunds, book fees, chargebacks and the payout as linked "
        "transfers, and queue what does not match. Importing a report again changes "
        "nothing. Exits 2 on a report that does not parse (nothing is changed).",
    )
    recon.add_argument("--processor", help="the processor's name (as in the settings)")
    recon.add_argument("--report", type=Path, help="the settlement report file (CSV)")
    recon.add_argument(
        "--tolerance",
        type=int,
        help="a line's gross this many minor units from ours still matches "
        "(default: the processor's in [reconciliation.tolerances], else 0)",
    )
    recon.add_argument(
        "--grace-days",
        type=int,
        help="days a capture may be late before it is missing_in_report "
        "(default: [reconciliation] grace_days, 1)",
    )
    recon.add_argument("--json", action="store_true", help="print the result as JSON")
    recon.add_argument("--config", type=Path, help="TOML settings file")
    recon.add_argument("--data-dir", help="override the data directory")
    recon.set_defaults(handler=_reconcile, action=None)
    actions = recon.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser(
        "exceptions",
        help="list a processor's exception queue",
        description="List the open exceptions of a processor (--all: resolved ones too).",
    )
    listing.add_argument("--processor", required=True, help="the processor's name")
    listing.add_argument("--all", action="store_true", help="resolved exceptions too")
    listing.add_argument("--json", action="store_true", help="print the rows as JSON")
    resolve = actions.add_parser(
        "resolve",
        help="resolve an exception with a note",
        description="Mark an open exception resolved with an operator's note (a resolved "
        "one keeps its first note). Exits 2 for an unknown id.",
    )
    resolve.add_argument("exception_id", metavar="EXC_ID", help="the exception's id")
    resolve.add_argument("--note", required=True, help="what the operator did or found")
    for action in (listing, resolve):
        action.add_argument("--config", type=Path, help="TOML settings file")
        action.add_argument("--data-dir", help="override the data directory")
        action.set_defaults(handler=_reconcile)


def _reconcile(args: argparse.Namespace) -> int:
    from rich.markup import escape  # noqa: PLC0415

    from paycore.ops import reconcile  # noqa: PLC0415
    from paycore.reconciliation import Rules, rules_for  # noqa: PLC0415

    errors = Console(stderr=True, highlight=False)
    settings = _settings(args.config, data_dir=args.data_dir)
    console = _console()
    if args.action == "exceptions":
        return asyncio.run(
            reconcile.run_exceptions(
                settings, console, args.processor, everything=args.all, json=args.json
            )
        )
    if args.action == "resolve":
        return asyncio.run(reconcile.run_resolve(settings, console, args.exception_id, args.note))
    if args.processor is None or args.report is None:
        errors.print("[red]error:[/] reconcile needs --processor and --report")
        return 2
    if (args.tolerance or 0) < 0 or (args.grace_days or 0) < 0:
        errors.print("[red]error:[/] --tolerance and --grace-days must be 0 or more")
        return 2
    try:
        text = args.report.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        errors.print(f"[red]error:[/] cannot read {escape(f'{args.report}: {exc}')}")
        return 2
    configured = rules_for(settings.reconciliation, args.processor)
    rules = Rules(
        tolerance=configured.tolerance if args.tolerance is None else args.tolerance,
        grace_days=configured.grace_days if args.grace_days is None else args.grace_days,
    )
    return asyncio.run(
        reconcile.run_import(
            settings, console, args.processor, args.report, text, rules=rules, json=args.json
        )
    )


def _add_events_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = sub.add_parser(
        "events",
        help="watch the event stream (NATS JetStream)",
        description="The ledger and payment events that the [events] publisher sends to "
        "NATS JetStream (docs/events.md).",
    )
    events.set_defaults(handler=_events, action=None, events_parser=events)
    actions = events.add_subparsers(dest="action", metavar="ACTION")
    text = "print events as JSON lines as they arrive, or replayed from a stream sequence"
    tail = actions.add_parser("tail", help=text, description=text + "; exits 2 on bad input.")
    tail.add_argument("--config", type=Path, help="TOML settings file (its [events] table)")
    tail.add_argument("--nats", help="NATS URL (default: [events] nats_url, else local)")
    tail.add_argument("--stream", help="the JetStream stream (default: [events] stream)")
    tail.add_argument(
        "--from",
        dest="from_seq",
        type=int,
        default=None,
        metavar="SEQ",
        help="replay from this stream sequence (1: the first); default: new events only",
    )
    tail.add_argument(
        "--subject", default=None, help="a subject filter, e.g. paycore.ledger.> (default: all)"
    )
    tail.add_argument("--count", type=int, default=None, help="stop after N events")
    tail.add_argument(
        "--idle", type=float, default=None, help="stop when nothing came for this many seconds"
    )
    tail.set_defaults(handler=_events)
    text = "print the JSON Schema of every event (version 1; docs/events.schema.json)"
    schema = actions.add_parser("schema", help=text, description=text + ".")
    schema.set_defaults(handler=_events_schema)


def _events_schema(args: argparse.Namespace) -> int:
    del args
    from paycore.events.json_schema import event_json_schema  # noqa: PLC0415

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(event_json_schema())).decode() + "\n")
    return 0


def _add_chaos(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chaos = sub.add_parser(
        "chaos",
        help="Jepsen-style run: workload + faults on a local cluster, then check; exits 1 on "
        "any violation",
        description="Start a small local cluster (PostgreSQL shards behind TCP proxies, Redis, "
        "acquirer simulators, API nodes), run a recorded workload of transfers, holds, card "
        "payments and payouts while a seeded nemesis injects faults, then check the history "
        "and the final state (money conserved, acknowledged = present once, refused = no "
        "effect, limits, payments' amounts, everything resolved, balances = replay, audit). "
        "Writes history.jsonl, final-state.json, report.json and timeline.png to --out.",
    )
    length = chaos.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="workload length in minutes")
    length.add_argument("--seconds", type=float, help="workload length in seconds (60)")
    chaos.add_argument("--seed", type=int, default=1, help="seeds the mix and the faults (1)")
    chaos.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    chaos.add_argument(
        "--cross-shard-share", type=float, default=0.3, help="share of cross-shard transfers"
    )
    chaos.add_argument(
        "--faults", nargs="+", metavar="KIND", help="fault kinds (default: all of them)"
    )
    chaos.add_argument("--out", type=Path, help="output directory (default ./chaos-<seed>)")
    chaos.add_argument("--nodes", type=int, default=2, help="API nodes (2)")
    chaos.add_argument("--shards", type=int, default=2, help="PostgreSQL shards (2)")
    chaos.add_argument(
        "--cluster",
        type=Path,
        metavar="DATA_DIR",
        help="run against the running `paycore cluster` of this data directory (through "
        "nginx; its own processes are the targets) instead of the local setup",
    )
    chaos.set_defaults(handler=_chaos)


def _console() -> Console:
    return Console(highlight=False)


# -- demo ------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from paycore.tools.demo.run import DemoOptions, run_demo  # noqa: PLC0415

    data_dir = args.data_dir
    if data_dir is None and args.serve:  # chosen here: --serve opens it again afterwards
        data_dir = Path("paycore-data") / f"demo-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    options = DemoOptions(
        data_dir=data_dir,
        wallets=args.wallets,
        clients=args.clients,
        duration=args.duration,
        synchronous=args.synchronous,
        seed=args.seed,
        json_path=args.json,
        payments=args.payments,
        payments_duration=args.payments_duration,
        payment_clients=args.payment_clients,
    )
    status = asyncio.run(run_demo(options, _console()))
    if status != 2 and not args.serve:  # 2: nothing was made to serve
        sys.stdout.write(
            "to browse a demo's ledger in the web console, run it with --serve: it ends by "
            "printing the console's URL and an admin key, and serves until Ctrl-C\n"
        )
    if not args.serve or status == 2:
        return status
    return _serve_demo(data_dir, args.port)


def _serve_demo(data_dir: Path, port: int) -> int:
    """Serve the demo's ledger (its four shards) on 127.0.0.1 with an admin key made for
    the demo's tenant, and say where the console is; until Ctrl-C or SIGTERM."""
    import uvicorn  # noqa: PLC0415

    from paycore.api import create_app  # noqa: PLC0415
    from paycore.api.auth import ApiKeys, Scope  # noqa: PLC0415
    from paycore.cluster.topology import build_store  # noqa: PLC0415
    from paycore.tools.demo.asgi_client import DEMO_TENANT  # noqa: PLC0415
    from paycore.tools.demo.run import DEMO_SHARDS  # noqa: PLC0415

    settings = Settings(data_dir=str(data_dir), embedded_shards=DEMO_SHARDS, port=port)

    async def admin_key() -> str:
        store = build_store(settings)
        await store.start()
        try:
            scopes = frozenset({Scope.READ, Scope.WRITE, Scope.ADMIN})
            return (await ApiKeys(store).create(DEMO_TENANT, scopes)).token
        finally:
            await store.stop()

    token = asyncio.run(admin_key())
    app = create_app(build_store(settings), settings, auditor=_console_auditor())
    # Plain lines: a script reading stdout finds them as they are.
    sys.stdout.write(
        f"console: http://127.0.0.1:{port}/console\n"
        f"admin key of tenant {DEMO_TENANT!r} (shown once): {token}\n"
        "the demo's ledger is served until Ctrl-C\n"
    )
    sys.stdout.flush()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", log_config=None)
    return 0


# -- serve -----------------------------------------------------------------------------


def _settings(config: Path | None, *, data_dir: str | None = None, **overrides: object) -> Settings:
    settings = load_settings(config)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        changes["data_dir"] = data_dir
    return msgspec.structs.replace(settings, **changes) if changes else settings


def _console_auditor() -> Auditor:
    """The ledger audit the console of a served app may run (the tooling's checks)."""
    from paycore.ops.console_audit import console_audit  # noqa: PLC0415

    return console_audit


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from paycore.api.app import create_app  # noqa: PLC0415
    from paycore.cluster.topology import build_store  # noqa: PLC0415
    from paycore.config import shard_specs  # noqa: PLC0415

    settings = _settings(
        args.config,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        auth="open" if args.open else None,
    )
    console = _console()
    if args.workers > 1:
        return _serve_workers(args, settings, console)
    store = build_store(settings)
    app = create_app(store, settings, auditor=_console_auditor())
    shards = ", ".join(f"{spec.name}={spec.path or 'postgres'}" for spec in shard_specs(settings))
    console.print(
        f"[bold]paycore[/] serving http://{settings.host}:{settings.port}  "
        f"shards: {shards}  synchronous={settings.synchronous}  "
        f"docs=http://{settings.host}:{settings.port}/docs  "
        f"console=http://{settings.host}:{settings.port}/console"
    )
    if settings.auth == "open":  # the app logs it too, and /readyz says it
        console.print(
            "[bold red]WARNING: auth is OPEN: no API key is checked, every request acts "
            "for tenant 'default' with every scope. Never expose this server.[/]"
        )
    else:
        console.print("API keys required (Authorization: Bearer ...): see `paycore keys create`")
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=args.log_level,
        log_config=None,  # its lines go through paycore's handler (``paycore.logs``)
        access_log=False,  # paycore writes its own, with the request id
        # On SIGTERM, requests still running after this are cut off, so that a node
        # always stops (a load balancer has already stopped sending it work); their
        # clients retry with the same key elsewhere.
        timeout_graceful_shutdown=10,
    )
    return 0


def _serve_workers(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    """``serve --workers N`` (N > 1): refused where the workers would not share one state
    (``paycore.ops.serve.worker_refusals``), else N uvicorn worker processes, each building
    its node from the same config file and overrides (``paycore.ops.serve``)."""
    import uvicorn  # noqa: PLC0415
    from uvicorn.config import STARTUP_FAILURE  # noqa: PLC0415
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    from paycore.config import shard_specs  # noqa: PLC0415
    from paycore.ops.serve import WORKER_ENV, WORKER_FACTORY, WorkerSpec, worker_refusals  # noqa: PLC0415

    refusals = worker_refusals(settings)
    if refusals:
        sys.stderr.write(
            f"paycore serve: --workers {args.workers} refused: {'; '.join(refusals)}\n"
        )
        return 2
    overrides = {"data_dir": args.data_dir, "host": args.host, "port": args.port}
    overrides["auth"] = "open" if args.open else None
    spec = WorkerSpec(
        config=None if args.config is None else str(args.config.resolve()),
        overrides={k: v for k, v in overrides.items() if v is not None},
        log_level=args.log_level,
        log_format=args.log_format,
        access_log=args.access_log,
    )
    # Inherited by the spawned workers; it names the config file, never a secret.
    os.environ[WORKER_ENV] = msgspec.json.encode(spec).decode()
    shards = ", ".join(f"{shard.name}=postgres" for shard in shard_specs(settings))
    console.print(
        f"[bold]paycore[/] serving http://{settings.host}:{settings.port} with "
        f"{args.workers} worker processes  shards: {shards}  "
        f"docs=http://{settings.host}:{settings.port}/docs  "
        f"console=http://{settings.host}:{settings.port}/console"
    )
    if settings.auth == "open":
        console.print(
            "[bold red]WARNING: auth is OPEN: no API key is checked, every request acts "
            "for tenant 'default' with every scope. Never expose this server.[/]"
        )
    else:
        console.print("API keys required (Authorization: Bearer ...): see `paycore keys create`")
    console.print(
        "[yellow]the console's sessions live in one worker process: a browser whose next "
        "connection reaches another worker must log in again; /metrics answers for the "
        "worker that takes the scrape[/]"
    )
    config = uvicorn.Config(
        WORKER_FACTORY,
        factory=True,
        workers=args.workers,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=args.log_level,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    # What ``uvicorn.run`` does with workers > 1, keeping the supervisor to read how its
    # workers ended: one that could not start (a shard or the lock service unreachable,
    # a bad setting) stops them all, and the command exits 3 as one process would.
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        sys.stderr.write(f"paycore serve: worker process {failed[0]} failed to start\n")
        return STARTUP_FAILURE
    return 0


def _worker(args: argparse.Namespace) -> int:
    from paycore.workers.node import run_worker_node  # noqa: PLC0415

    return asyncio.run(run_worker_node(_settings(args.config, data_dir=args.data_dir)))


def _events(args: argparse.Namespace) -> int:
    import nats.errors  # noqa: PLC0415

    from paycore.events.tail import tail  # noqa: PLC0415
    from paycore.redaction import redact_url  # noqa: PLC0415

    if args.action is None:
        args.events_parser.print_help()
        return 2
    if (args.from_seq is not None and args.from_seq < 1) or (
        args.count is not None and args.count < 1
    ):
        print("--from and --count must be at least 1", file=sys.stderr)
        return 2
    settings = _settings(args.config)
    configured = settings.events
    url = args.nats or (configured.nats_url if configured else "nats://127.0.0.1:4222")
    stream = args.stream or (configured.stream if configured else "PAYCORE")
    prefix = configured.subject_prefix if configured else "paycore"
    try:
        asyncio.run(
            tail(
                url,
                sys.stdout,
                stream=stream,
                subject=args.subject or f"{prefix}.>",
                from_seq=args.from_seq,
                count=args.count,
                idle_seconds=args.idle,
            )
        )
    except (nats.errors.Error, OSError) as exc:
        print(
            f"events tail: NATS at {redact_url(url)}: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


# -- audit -----------------------------------------------------------------------------


def _audit_checkpoint(
    path: Path | None, load: Callable[[Path], dict[str, Any]]
) -> dict[str, Any] | None:
    """The heads recorded in the checkpoint ``path`` ({} without one); None, said on
    stderr, when it cannot be read."""
    try:
        return {} if path is None else load(path)
    except (OSError, ValueError, msgspec.DecodeError) as exc:
        Console(stderr=True).print(f"[red]cannot read the checkpoint: {exc}[/]")
        return None


def _audit(args: argparse.Namespace) -> int:
    """Audit every shard of the topology; one shard prints (and --json gives) its own
    report, several shards the cross-shard report. Missing SQLite files are skipped."""
    from paycore.cluster.topology import shard_store  # noqa: PLC0415
    from paycore.config import shard_specs  # noqa: PLC0415
    from paycore.ops.audit import (  # noqa: PLC0415
        AuditReport,
        audit_cluster,
        audit_store,
        load_checkpoint,
        print_cluster_report,
        print_report,
        save_checkpoint,
        verified_heads,
    )
    from paycore.ops.audit_metrics import export_audit  # noqa: PLC0415
    from paycore.ops.reconcile import print_drift  # noqa: PLC0415
    from paycore.reconciliation import drift_of  # noqa: PLC0415

    console = _console()
    settings = _settings(args.config, data_dir=args.data_dir)
    specs = [s for s in shard_specs(settings) if s.path is None or s.path.exists()]
    recorded = _audit_checkpoint(args.checkpoint, load_checkpoint)
    if not specs or recorded is None:
        if not specs:
            Console(stderr=True).print(f"[red]no ledger in {settings.data_dir}[/]")
        return 2
    stuck = settings.saga_stuck_seconds if args.stuck is None else args.stuck

    def keep_checkpoint(reports: dict[str, AuditReport]) -> None:
        """Record the heads verified now; a shard whose chain failed keeps its old one."""
        if args.checkpoint is not None:
            verified = verified_heads(reports)
            save_checkpoint(args.checkpoint, {**recorded, **verified})
            if not args.json:
                console.print(
                    f"checkpoint {args.checkpoint}: {len(verified)} of "
                    f"{len(reports)} shard head(s) recorded"
                )

    async def run() -> int:
        stores = {spec.name: shard_store(spec, settings) for spec in specs}
        for store in stores.values():
            await store.start()
        try:
            if len(stores) == 1:
                ((name, store),) = stores.items()
                report = await audit_store(
                    store,
                    grace_seconds=args.grace,
                    max_violations=args.max_violations,
                    checkpoint=recorded.get(name),
                )
                if args.json:
                    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
                else:
                    console.print(f"audit of {specs[0].path or specs[0].name}")
                    print_report(report, console)
                    print_drift(await drift_of(stores, store), console)
                keep_checkpoint({name: report})
                export_audit(args.metrics_file, {name: report}, cross_shard=None, ok=report.ok)
                return 0 if report.ok else 1
            cluster = await audit_cluster(
                stores,
                grace_seconds=args.grace,
                stuck_seconds=stuck,
                max_violations=args.max_violations,
                checkpoints=recorded,
            )
            drifts = [] if args.json else await drift_of(stores, stores[specs[0].name])
        finally:
            for store in stores.values():
                await store.stop()
        if args.json:
            sys.stdout.write(msgspec.json.encode(cluster).decode() + "\n")
        else:
            console.print(f"audit of {len(stores)} shards: {', '.join(stores)}")
            print_cluster_report(cluster, console)
            print_drift(drifts, console)
        keep_checkpoint(cluster.shards)
        export_audit(
            args.metrics_file, cluster.shards, cross_shard=len(cluster.violations), ok=cluster.ok
        )
        return 0 if cluster.ok else 1

    return asyncio.run(run())


def _shards_status(args: argparse.Namespace) -> int:
    from paycore.ops.shards import print_shards, shards_status  # noqa: PLC0415

    settings = _settings(args.config, data_dir=args.data_dir)
    report = asyncio.run(shards_status(settings))
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        print_shards(report, _console())
    return 0


def _slot_range(text: str | None) -> tuple[int, int]:
    first, _, last = (text or "").partition("-")
    try:
        lo, hi = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"--slots {text!r}: a slot range such as 0-511") from None
    return lo, hi


def _shards_move(args: argparse.Namespace) -> int:
    from paycore.cluster.slot_moves import MoveBlocked  # noqa: PLC0415
    from paycore.ops.resharding import run_moves  # noqa: PLC0415

    console = _console()
    settings = _settings(args.config, data_dir=args.data_dir)
    try:
        moves = [] if args.abort else [(*_slot_range(args.slots), str(args.target or ""))]
        if not args.abort and not args.target:
            raise ValueError("--to SHARD is required")
        reports = asyncio.run(
            run_moves(settings, moves, wait_seconds=args.wait, abort=args.abort, say=console.print)
        )
    except MoveBlocked as exc:
        console.print(f"[red]not moved:[/red] {exc}")
        return 1
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    for r in reports:
        console.print(
            f"moved slots {r.plan.first}-{r.plan.last} {r.plan.source} -> {r.plan.target}: "
            f"{r.accounts:,} accounts, {r.transfers:,} history rows in {r.seconds:.2f} s; "
            f"writes to those slots paused {r.fenced_seconds:.2f} s (map version "
            f"{r.plan.version})"
        )
    return 0


def _shards_add(args: argparse.Namespace) -> int:
    from paycore.ops.resharding import (  # noqa: PLC0415
        balance,
        balance_moves,
        create_embedded_shard,
        next_embedded_shard,
        stored_map,
    )

    console = _console()
    settings = _settings(args.config, data_dir=args.data_dir)
    try:
        name = args.name
        if name is None:
            if settings.shards:
                raise ValueError("--name: the [[shards]] name of the new shard")
            name = next_embedded_shard(settings)
        shard_map, names = asyncio.run(stored_map(settings))
        if args.plan:  # the moves as planned now (a pending hold may change them)
            for first, last, target in balance_moves(shard_map, sorted({*names, name}), name):
                console.print(
                    f"move slots {first}-{last} ({shard_map.shard_of_slot(first)}) -> {target}"
                )
            return 0
        if args.name is None:
            asyncio.run(create_embedded_shard(settings))
        elif name not in names:
            raise ValueError(f"shard {name!r} is not in the settings' [[shards]]")
        held = asyncio.run(balance(settings, name, wait_seconds=args.wait, say=console.print))
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    console.print(f"{name} holds {held:,} slots")
    return 0


# -- keys ------------------------------------------------------------------------------


def _keys(args: argparse.Namespace) -> int:
    from rich.markup import escape  # noqa: PLC0415

    from paycore.api.auth import parse_scopes  # noqa: PLC0415
    from paycore.ledger.model import is_valid_tenant  # noqa: PLC0415
    from paycore.ops import keys  # noqa: PLC0415

    errors = Console(stderr=True, highlight=False)
    if args.action is None:
        args.keys_parser.print_help()
        return 2

    def bad(text: str) -> int:
        errors.print(f"[red]error:[/] {escape(text)}")
        return 2

    try:
        settings = _settings(args.config, data_dir=args.data_dir)
    except (OSError, ValueError, msgspec.ValidationError) as exc:
        return bad(f"bad config: {exc}")
    console = _console()
    if args.action == "create":
        if not is_valid_tenant(args.tenant):
            return bad(f"tenant {args.tenant!r}: 1-64 chars of [A-Za-z0-9_.-]")
        try:
            scopes = parse_scopes(args.scopes)
        except ValueError as exc:
            return bad(str(exc))
        days = args.expires_in_days
        if days is not None and days < 1:
            return bad("--expires-in-days must be at least 1")
        expires = None if days is None else days * 86400
        asyncio.run(keys.create_key(settings, console, args.tenant, scopes, expires))
        return 0
    if args.action == "list":
        asyncio.run(keys.list_keys(settings, console))
        return 0
    if args.action == "revoke":
        if asyncio.run(keys.revoke_key(settings, console, args.key_id)) is None:
            return bad(f"no API key {args.key_id!r}")
        return 0
    if args.grace_seconds < 0:
        return bad("--grace-seconds must be 0 or more")
    try:
        asyncio.run(keys.rotate_key(settings, console, args.key_id, args.grace_seconds))
    except LookupError as exc:
        return bad(str(exc.args[0]))
    return 0


# -- migrate ---------------------------------------------------------------------------


def _migrate(args: argparse.Namespace) -> int:
    from rich.markup import escape  # noqa: PLC0415

    from paycore.cluster.topology import shard_map_of  # noqa: PLC0415
    from paycore.config import shard_specs  # noqa: PLC0415
    from paycore.ops.migrate import migrate_shards, print_migrations  # noqa: PLC0415

    try:
        settings = _settings(args.config, data_dir=args.data_dir)
        shard_map_of(settings)  # the whole topology is checked, slot map included
        specs = shard_specs(settings)
    except (OSError, ValueError, msgspec.ValidationError) as exc:  # tomllib's errors too
        Console(stderr=True, highlight=False).print(f"[red]bad config:[/] {escape(str(exc))}")
        return 2
    results = migrate_shards(specs, dry_run=args.dry_run)
    print_migrations(results, _console(), dry_run=args.dry_run)
    return 0 if all(r.ok for r in results) else 1


# -- bench -----------------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    from paycore.tools.bench.transfers import run_bench  # noqa: PLC0415

    return run_bench(args, _console())


# -- chaos -----------------------------------------------------------------------------


def _chaos(args: argparse.Namespace) -> int:
    from paycore.chaos.nemesis import FaultKind  # noqa: PLC0415
    from paycore.chaos.run import DEFAULT_FAULTS, ChaosOptions, run_chaos  # noqa: PLC0415

    err = Console(stderr=True, highlight=False)
    try:
        faults = tuple(FaultKind(k) for k in args.faults) if args.faults else DEFAULT_FAULTS
    except ValueError as exc:
        err.print(f"{exc}; kinds: {', '.join(k.value for k in FaultKind)}")
        return 2
    seconds = args.minutes * 60 if args.minutes is not None else (args.seconds or 60.0)
    options = ChaosOptions(
        seconds=seconds,
        seed=args.seed,
        clients=args.clients,
        cross_shard_share=args.cross_shard_share,
        faults=faults,
        out=args.out or Path(f"chaos-{args.seed}"),
        nodes=args.nodes,
        shards=args.shards,
    )
    return run_chaos(options, _console(), cluster=args.cluster)


# -- acquirer-sim ----------------------------------------------------------------------


def _acquirer_sim(args: argparse.Namespace) -> int:
    from paycore.payments.processors.simulator.app import serve  # noqa: PLC0415
    from paycore.payments.processors.simulator.config import config_from_args  # noqa: PLC0415

    try:
        config = config_from_args(args)
    except (ValueError, msgspec.ValidationError) as exc:
        Console(stderr=True, highlight=False).print(f"bad behaviour: {exc}", markup=False)
        return 2
    return serve(
        args.name, config, host=args.host, port=args.port, seed=args.seed, log_level=args.log_level
    )


if __name__ == "__main__":
    sys.exit(main())
