"""Payment processors: the connector protocol, the acquirer simulator and its HTTP connector."""
