"""Helpers shared by CLI modules: error exits, loading plans, opening networks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from corridor.errors import CorridorError, NeedsRootError

BACKEND_OPTION = click.option(
    "--link-backend",
    type=click.Choice(["auto", "netem", "userspace"]),
    default="auto",
    show_default=True,
    help="How WAN links are emulated: kernel netem, the userspace delay line, or auto (netem where the "
    "kernel has it, else userspace; the choice and the reason are printed and recorded).",
)


class CorridorClickError(click.ClickException):
    """A user-facing error with a chosen exit status (2 bad input, 3 needs root, 1 failed run)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]


def fail(message: str, code: int = 2) -> NoReturn:
    raise CorridorClickError(message, code)


def load_plan_or_fail(name_or_path: str) -> Any:
    from corridor.planner import build_plan
    from corridor.spec import load_topology

    try:
        return build_plan(load_topology(name_or_path))
    except CorridorError as exc:
        fail(str(exc))


@contextlib.contextmanager
def network_or_fail(plan: Any, backend: str, **kwargs: Any) -> Iterator[Any]:
    """Open a CorridorNetwork, turning library errors into CLI errors; always torn down."""
    from corridor.emulation.network import CorridorNetwork

    try:
        with CorridorNetwork(plan, backend=backend, **kwargs) as net:
            yield net
    except NeedsRootError as exc:
        fail(str(exc), code=3)
    except KeyboardInterrupt:
        fail("interrupted; the network was torn down", code=130)
    except CorridorError as exc:
        fail(str(exc), code=1)
