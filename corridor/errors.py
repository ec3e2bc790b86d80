"""Error types shared by every stage.

Library code raises these; only ``corridor.cli`` turns them into messages and
exit codes. Each message is a full sentence a user can act on: it names the
problem and, where there is one, the fix.

Each class carries the exit status the command line gives it (``exit_code``),
so every command maps the same error to the same status: 2 bad input (spec,
unit, trace, run directory), 1 a run or measurement that failed (emulation,
agents), 3 a command that needs root.
"""

from __future__ import annotations


class CorridorError(Exception):
    """Base of every error the project raises on purpose."""

    #: The command line's exit status for this error.
    exit_code = 2


class UnitError(CorridorError, ValueError):
    """A quantity string such as ``"25ms"`` or ``"10Gbit"`` could not be parsed."""


class SpecError(CorridorError):
    """A topology or experiment spec is invalid.

    ``path`` is the file (or ``"<preset NAME>"``), ``key`` the dotted key inside it.
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        where = ""
        if path and key:
            where = f"{path}: {key}: "
        elif path:
            where = f"{path}: "
        elif key:
            where = f"{key}: "
        super().__init__(where + message)
        self.bare_message = message


class EmulationError(CorridorError):
    """Building, running or tearing down the emulated network failed."""

    exit_code = 1


class NeedsRootError(EmulationError):
    """The command needs root (network namespaces, tc, Mininet)."""

    exit_code = 3


class TraceError(CorridorError):
    """A trace file is malformed; the message names the file and line."""


class AgentError(CorridorError):
    """A workload agent failed, hung or was killed."""

    exit_code = 1


class RunDirError(CorridorError):
    """A run directory is missing, damaged, or of an unsupported format version."""


class PlacementError(CorridorError):
    """A cluster's servers cannot take a topology: too few cores for its busy link directions."""


class ClusterError(EmulationError):
    """A server of the cluster could not be reached or used; the message names the server."""
