"""Tenant-scoped ids: the id a client names and the id the store keeps.

Ids are scoped by tenant: two tenants may use the same id and never see each other's.
The store keeps one id space, so the API maps every id it takes into the caller's
namespace and every id it answers back out of it:

- tenant ``default`` (open mode, and every object made before tenants existed): ids are
  kept as the client sent them, so its data and answers are the same as ever;
- any other tenant ``t``: client id ``x`` is kept as ``t/x``.

``/`` is in neither the client id charset (``[A-Za-z0-9_.:-]``) nor the tenant charset
(``[A-Za-z0-9_.-]``), so no client id can spell another tenant's internal id, and an id
of another tenant can never be found, taken or timed: it is a different string.

paycore's own ids are shared by every tenant and never prefixed: accounts starting
with ``clearing:``, ``psp:``, ``fx:`` or ``recon:`` (clearing, processor, FX and
reconciliation accounts, which only ``admin`` keys may read) and transfers starting with
``xs.``, ``pm.``, ``fx.`` or ``rc.`` (the cross-shard settlement's, the payments', the
conversions' and the settlement reports' steps, shown to the tenant whose account they
touch; a conversion's ids hold its random quote id).
No client may create an id of these forms (the router refuses them), so leaving them
unprefixed gives no tenant a way into another's namespace; it keeps a tenant's answers
for them the same as the default tenant's (a read of its payment's ledger transfer, a
refusal of a reserved id).

A client id that holds a ``/`` (only a path parameter could bring one: bodies are
checked against the id pattern) is mapped to an id that names nothing (a leading
``/``), so it is a miss for every tenant, the default one included.
"""

from __future__ import annotations

from typing import Final

from paycore.ledger.model import DEFAULT_TENANT, SYSTEM_TENANT

__all__ = [
    "SEPARATOR",
    "SYSTEM_ACCOUNT_PREFIXES",
    "SYSTEM_TRANSFER_PREFIXES",
    "client_detail",
    "client_id",
    "id_prefix",
    "internal_account_id",
    "internal_transfer_id",
]

SEPARATOR: Final = "/"
# The router refuses clients every id of these forms (``cluster.namespaces``:
# ``reserved_account_id``, ``refusal_of_client_item``), on one shard too: only
# then may they be shared by all tenants. tests/api/test_tenant_ids.py checks it.
SYSTEM_ACCOUNT_PREFIXES: Final = ("clearing:", "psp:", "fx:", "recon:")
SYSTEM_TRANSFER_PREFIXES: Final = ("xs.", "pm.", "fx.", "rc.")


def id_prefix(tenant: str) -> str:
    """What ``tenant``'s internal ids start with: ``""`` for the default tenant (and
    paycore's own), ``"<tenant>/"`` for any other."""
    if tenant in (DEFAULT_TENANT, SYSTEM_TENANT):
        return ""
    return tenant + SEPARATOR


def _internal(prefix: str, client: str, shared: tuple[str, ...]) -> str:
    if SEPARATOR in client:
        return SEPARATOR + client  # names nothing: no stored id starts with "/"
    if not prefix or client.startswith(shared):
        return client
    return prefix + client


def internal_account_id(tenant: str, client: str) -> str:
    """The store's id of ``tenant``'s account ``client``."""
    return _internal(id_prefix(tenant), client, SYSTEM_ACCOUNT_PREFIXES)


def internal_transfer_id(tenant: str, client: str) -> str:
    """The store's id of ``tenant``'s transfer ``client``."""
    return _internal(id_prefix(tenant), client, SYSTEM_TRANSFER_PREFIXES)


def client_id(tenant: str, internal: str) -> str:
    """The id ``tenant`` knows the stored ``internal`` by (its own prefix removed)."""
    prefix = id_prefix(tenant)
    if prefix and internal.startswith(prefix):
        return internal[len(prefix) :]
    if internal.startswith(SEPARATOR):
        return internal[1:]
    return internal


def client_detail(tenant: str, detail: str) -> str:
    """An error detail as ``tenant`` may read it: every id of its namespace named in it
    (paycore quotes ids with ``!r``: ``'t1/a1'``) shown as the client id."""
    prefix = id_prefix(tenant)
    if not prefix:
        return detail
    return detail.replace("'" + prefix, "'")
