"""What every ``--json`` prints: strict, versioned JSON.

Stage: CLI (formats text; prints only through :func:`echo_json`). One shape
for every command: a single JSON object whose first key is ``format_version``
(the version of that command's output shape, raised when a key changes
meaning or goes away) followed by the command's payload, whose keys carry
their units (``rtt_ms``, ``rate_mbps``, ``size_bytes``). Commands that print
JSON lines (``bench collective --json``) put ``format_version`` in every line,
so each line is a document of its own. Not-a-number and infinities become
``null``: the output is standard JSON that any parser reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import click

#: The version of the --json output shapes; raise it when a key changes meaning or is removed.
FORMAT_VERSION = 1


def strict(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None``, tuples and sets as lists, paths as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [strict(v) for v in sorted(value, key=str)]
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return strict(dataclasses.asdict(value))
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def document(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` as a versioned document: ``format_version`` first (the payload's own, if it has one)."""
    doc: dict[str, Any] = {"format_version": payload.get("format_version", FORMAT_VERSION)}
    doc.update((k, v) for k, v in payload.items() if k != "format_version")
    return strict(doc)  # type: ignore[no-any-return]


def json_text(payload: Mapping[str, Any], *, indent: int | None = 2) -> str:
    """The document for ``payload`` as strict JSON text."""
    return json.dumps(document(payload), indent=indent, allow_nan=False)


def echo_json(payload: Mapping[str, Any], *, indent: int | None = 2) -> None:
    """Print ``payload`` as one strict, versioned JSON document on stdout."""
    click.echo(json_text(payload, indent=indent))


def echo_json_line(record: Mapping[str, Any]) -> None:
    """Print one record of a JSON-lines output, with its own ``format_version``."""
    click.echo(json_text(record, indent=None))
