"""Background jobs that run beside the API: hold expiry and idempotency retention."""

from paycore.workers.maintenance import MaintenanceWorker, PassGuard, always_run

__all__ = ["MaintenanceWorker", "PassGuard", "always_run"]
