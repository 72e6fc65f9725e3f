"""Settings as the TOML file ``paycore serve --config`` reads: for tests that start a
real process on a configuration (the cluster's crash tests, the reconciliation's CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from paycore.config import Settings

__all__ = ["write_config"]


def write_config(path: Path, settings: Settings) -> Path:
    """``settings`` as the TOML file ``paycore serve --config`` reads (``load_settings``).

    Scalars as top-level keys, the topology as ``[[shards]]``/``[[placement]]`` tables;
    a ``None`` field is left out (its default). Strings are written as JSON strings,
    which TOML reads as the same basic strings.
    """

    def line(key: str, value: object) -> str:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        else:  # int, float: Python's repr is a TOML literal
            text = repr(value)
        return f"{key} = {text}\n"

    def table(name: str, struct: msgspec.Struct) -> str:
        """A ``[name]`` table; a dict field as its own ``[name.field]`` table."""
        body, subtables = "", ""
        for k, v in msgspec.structs.asdict(struct).items():
            if isinstance(v, dict):
                pairs = "".join(line(json.dumps(dk), dv) for dk, dv in v.items())
                subtables += f"\n[{name}.{k}]\n{pairs}"
            elif v is not None:
                body += line(k, v)
        return f"\n[{name}]\n{body}{subtables}"

    scalars: list[str] = []
    tables: list[str] = []
    for key, value in msgspec.structs.asdict(settings).items():
        if isinstance(value, tuple):
            for item in value:
                fields = msgspec.structs.asdict(item).items()
                body = "".join(line(k, v) for k, v in fields if v is not None)
                tables.append(f"\n[[{key}]]\n{body}")
        elif isinstance(value, msgspec.Struct):  # [fx], [events]...
            tables.append(table(key, value))
        elif value is not None:
            scalars.append(line(key, value))
    path.write_text("".join(scalars + tables))
    return path
