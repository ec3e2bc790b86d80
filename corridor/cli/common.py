"""Helpers shared by CLI modules: error exits, loading plans, opening networks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from corridor.errors import CorridorError, NeedsRootError
from corridor.links.backends import BACKEND_CHOICES

BACKEND_OPTION = click.option(
    "--link-backend",
    type=click.Choice(list(BACKEND_CHOICES)),
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


def load_plan_or_fail(name_or_path: str, **overrides: Any) -> Any:
    """Load a preset or topology file, apply link overrides given as YAML strings, and plan it."""
    from corridor.planner import build_plan
    from corridor.spec import load_topology, override_links

    try:
        spec = load_topology(name_or_path)
        given = {key: value for key, value in overrides.items() if value is not None}
        if given:
            spec = override_links(spec, **given)
        return build_plan(spec)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)


def link_override_options(func: Any) -> Any:
    """--rate/--delay/--loss/--queue: change every WAN link of the topology for this command."""
    for option in reversed([
        click.option("--rate", default=None, help="Set every WAN link's rate, e.g. 200Mbit or 10Gbit."),
        click.option("--delay", default=None, help="Set every WAN link's one-way delay, e.g. 25ms."),
        click.option("--loss", default=None, help="Set every WAN link's random loss, e.g. 0.1% or 1e-4."),
        click.option("--queue", default=None, help="Set every WAN link's queue, e.g. 2bdp, 6MB or 1000p."),
    ]):
        func = option(func)
    return func


@contextlib.contextmanager
def network_or_fail(plan: Any, backend: str, **kwargs: Any) -> Iterator[Any]:
    """Open a CorridorNetwork, turning library errors into CLI errors; always torn down."""
    from corridor.emulation.network import CorridorNetwork

    try:
        with CorridorNetwork(plan, backend=backend, **kwargs) as net:
            yield net
    except NeedsRootError as exc:
        fail(str(exc), code=exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted; the network was torn down", code=130)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
