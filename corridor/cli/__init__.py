"""The ``corridor`` command line: the only place that prints to the user or exits.

Each area keeps its commands in a module of this package with a
``register(group)`` function; :data:`COMMAND_MODULES` is the explicit registry.
Library errors (:class:`corridor.errors.CorridorError`) become one-sentence
messages here, in one place, with the exit status their class names
(``exit_code``: 2 bad input, 1 a failed run, 3 needs root), whichever command
raised them.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from corridor import __version__
from corridor.errors import CorridorError

#: Modules under corridor.cli whose ``register(cli)`` adds commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "topo",
    "system",
    "capture",
    "bench_collective",
    "bench_link",
    "bench_links",
    "trace",
    "run",
    "validate",
    "schema",
    "updown",
    "cluster",
)


#: Commands whose arguments after the command name belong to another program, so -v is left there.
_PASS_THROUGH_COMMANDS = frozenset({"exec"})


def hoist_verbose(args: list[str]) -> list[str]:
    """``-v``/``-vv``/``--verbose`` written after the subcommand, moved before it where the group reads them.

    Nothing after ``--`` moves, nor anything of a command that runs another
    program (``exec``), whose options are that program's.
    """
    flags: list[str] = []
    rest: list[str] = []
    seen_command = False
    for i, arg in enumerate(args):
        if arg == "--":
            rest += args[i:]
            break
        if not seen_command and not arg.startswith("-"):
            seen_command = True
            if arg in _PASS_THROUGH_COMMANDS:
                rest += args[i:]
                break
        if seen_command and (arg == "--verbose" or (len(arg) > 1 and arg.startswith("-") and set(arg[1:]) == {"v"})):
            flags.append(arg)
        else:
            rest.append(arg)
    return flags + rest


class CorridorGroup(click.Group):
    """The command group: turns any CorridorError a command lets through into its message and exit status."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            args = hoist_verbose(list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        from corridor.cli.common import CorridorClickError

        try:
            return super().invoke(ctx)
        except CorridorError as exc:
            raise CorridorClickError(str(exc), exc.exit_code) from exc


@click.group(cls=CorridorGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="corridor")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Emulate long-haul compute corridors and judge which AI workloads tolerate them.

    corridor builds Mininet networks of remote GPU sites and coastal cities whose
    WAN links carry the delay, rate, queue and loss that geography and fibre imply,
    replays training and inference traffic across them, and reports a verdict per
    workload.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.group()
def bench() -> None:
    """Benchmarks that print their figures (link fidelity, collectives)."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"corridor.cli.{_name}").register(cli)


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="corridor", standalone_mode=True) or 0)
