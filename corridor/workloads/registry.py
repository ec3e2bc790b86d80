"""The registry of workload kinds: the one place that says which kinds exist.

Stage: spec/analysis plug-in (pure at import). Adding a kind is one module that
implements :class:`corridor.workloads.kind.WorkloadKind` plus one line in
:data:`KINDS`. Tests swap in fake kinds with ``monkeypatch.setitem(KINDS, ...)``.
"""

from __future__ import annotations

from corridor.workloads.bulk import BulkKind
from corridor.workloads.inference.kind import InferenceKind
from corridor.workloads.kind import WorkloadKind
from corridor.workloads.training.kind import TrainingKind

KINDS: dict[str, WorkloadKind] = {
    "training": TrainingKind(),
    "inference": InferenceKind(),
    "bulk": BulkKind(),
}


def get(name: str) -> WorkloadKind:
    """The kind registered as ``name`` (KeyError naming the registered kinds otherwise)."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"no workload kind {name!r}; registered: {', '.join(KINDS)}") from None


def pattern_kinds() -> dict[str, str]:
    """Pattern name (a workload's ``type``) -> the kind that owns it, over every registered kind."""
    out: dict[str, str] = {}
    for name, kind in KINDS.items():
        for pattern in kind.patterns():
            if pattern in out:
                raise RuntimeError(f"pattern {pattern!r} is claimed by kinds {out[pattern]!r} and {name!r}")
            out[str(pattern)] = name
    return out
