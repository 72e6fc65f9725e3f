"""HTTP route handlers, one module per resource; each binds its handlers to a store."""

from paycore.api.routes.accounts import account_routes
from paycore.api.routes.api_keys import api_key_routes
from paycore.api.routes.ops import ops_routes
from paycore.api.routes.transfers import transfer_routes

__all__ = ["account_routes", "api_key_routes", "ops_routes", "transfer_routes"]
