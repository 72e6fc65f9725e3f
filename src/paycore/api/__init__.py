"""paycore's HTTP API (Litestar + msgspec): ``create_app(store, settings)``."""

from paycore.api.app import create_app

__all__ = ["create_app"]
