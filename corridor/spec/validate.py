"""The one validation toolkit for every YAML document and parameter block.

Stage: spec (pure). Topology files, experiment files, workload parameters,
SLO blocks and fault schedules all check their keys and values through these
functions, so every error reads the same way: the file, the dotted key, what is
wrong, what is allowed, and for a misspelt key or choice the nearest allowed
one ("did you mean 'rate'?"). Duplicate keys and oversized documents are
refused by the one YAML loader, :mod:`corridor.spec.yamlio`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from corridor.errors import SpecError, UnitError


def did_you_mean(name: object, options: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the closest option to ``name``, or an empty string."""
    near = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.6)
    return f"did you mean {near[0]!r}? " if near else ""


def check_keys(data: Mapping[Any, Any], allowed: Iterable[str], *, path: str | None, where: str = "",
               what: str = "key") -> None:
    """Refuse the first key of ``data`` not in ``allowed``, naming the nearest allowed one."""
    allowed = sorted(allowed)
    for key in data:
        if key not in allowed:
            dotted = f"{where}.{key}" if where else str(key)
            raise SpecError(f"unknown {what} {key!r}; {did_you_mean(key, allowed)}allowed: {', '.join(allowed)}",
                            path=path, key=dotted)


def check_choice(value: Any, allowed: Iterable[str], *, path: str | None, key: str) -> str:
    """``value`` if it is one of ``allowed``; otherwise a SpecError naming them and the nearest."""
    allowed = list(allowed)
    if value not in allowed:
        raise SpecError(f"must be one of {', '.join(allowed)}, got {value!r}; {did_you_mean(value, allowed)}".rstrip(
            "; "), path=path, key=key)
    return str(value)


def check_quantity(parse: Callable[[Any], float], value: Any, *, path: str | None, key: str, low: float,
                   high: float) -> float:
    """``value`` read by a :mod:`corridor.spec.units` parser and held to ``[low, high]``; a SpecError otherwise."""
    try:
        parsed = float(parse(value))
    except UnitError as exc:
        raise SpecError(str(exc), path=path, key=key) from exc
    if not low <= parsed <= high:
        raise SpecError(f"must be from {low:g} to {high:g}, got {value!r}", path=path, key=key)
    return parsed


def describe_value(value: object) -> str:
    """A value as an error message names it: "nothing", "a mapping", "a list", or its type and repr."""
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
