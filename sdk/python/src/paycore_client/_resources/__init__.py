"""The resource services, each a sync and an async twin around pure call builders."""
