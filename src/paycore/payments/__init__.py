"""Payments: intents, processors, routing, resilience and webhooks over the ledger."""
