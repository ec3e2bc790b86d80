"""Helpers shared by CLI modules: error exits, loading plans, opening networks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
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

#: ``--cluster FILE`` on a command that builds a network: spread it over the file's servers.
CLUSTER_OPTION = click.option(
    "--cluster", "cluster_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Spread the network over the servers this cluster file names (docs/cluster.md); run "
         "`corridor doctor --cluster FILE` first.")


def load_cluster_or_fail(cluster_file: Path | None) -> Any:
    """The validated cluster file, or None without one; a bad file is a CLI error naming the key."""
    if cluster_file is None:
        return None
    from corridor.cluster.spec import load_cluster

    try:
        return load_cluster(cluster_file)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)


def check_pins_or_fail(exp: Any, cluster: Any) -> None:
    """Refuse a cluster file whose pins do not fit the experiment's topology, before any run directory exists."""
    from corridor.cli.topo import load_plan
    from corridor.cluster.placer import place

    try:
        place(load_plan(exp.topology), cluster)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)


class Duration(click.ParamType):
    """A duration with its unit in the value (``6s``, ``500ms``, ``2min``), read by :mod:`corridor.spec.units`.

    The command receives seconds as a float. A bare number is refused, since
    the option's name does not say its unit; ``min_s`` is the least allowed.
    """

    name = "duration"

    def __init__(self, min_s: float = 0.0) -> None:
        self.min_s = min_s

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from corridor.errors import UnitError
        from corridor.spec.units import parse_duration_ms

        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration_ms(str(value)) / 1e3
        except UnitError as exc:
            self.fail(f"{exc} (units: us, ms, s, min, h)", param, ctx)
        if seconds < self.min_s:
            self.fail(f"{value!r} is shorter than the least allowed, {self.min_s:g}s", param, ctx)
        return seconds


def out_option(*, help: str, **kwargs: Any) -> Any:
    """``-o/--out``: the one spelling of an output path across commands (file or folder by ``type``)."""
    return click.option("-o", "--out", "out", help=help, **kwargs)


def _complete(names: list[str], incomplete: str) -> list[Any]:
    from click.shell_completion import CompletionItem

    items = [CompletionItem(name) for name in names if name.startswith(incomplete)]
    # a path is completed by the shell itself; a name never contains '/'
    return items + [CompletionItem(incomplete, type="file")]


def complete_topology(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Tab completion of TOPOLOGY: the presets (with CORRIDOR_TOPOLOGIES), then YAML files."""
    from corridor.spec.topospec import list_presets

    return _complete(list_presets(), incomplete)


def complete_experiment(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Tab completion of EXPERIMENT: the experiments under experiments/, then YAML files."""
    from corridor.spec.experiment import list_experiments

    return _complete(list_experiments(), incomplete)


class CorridorClickError(click.ClickException):
    """A user-facing error with a chosen exit status (2 bad input, 3 needs root, 1 failed run)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]


def fail(message: str, code: int = 2) -> NoReturn:
    raise CorridorClickError(message, code)


def load_plan_or_fail(name_or_path: str, **overrides: Any) -> Any:
    """Load a preset or topology file, apply link overrides given as YAML strings, and plan it."""
    from corridor.planning.points import plan_for_topology

    try:
        return plan_for_topology(name_or_path, **overrides)
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


def raise_interrupt(_signum: int, _frame: Any) -> None:
    """A SIGTERM handler that turns the signal into Ctrl-C, so a benchmark tears its namespaces down."""
    raise KeyboardInterrupt


def engine_option(func: Any) -> Any:
    """--engine: which program runs each userspace link (see :mod:`corridor.links.engine`)."""
    from corridor.links.engine import ENGINES

    return click.option(
        "--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
        help="Delay-line program of each userspace link: native (compiled by scripts/setup.sh), python, "
        "or auto (native where it is built). Also CORRIDOR_DELAYLINE_ENGINE.",
    )(func)


def use_engine(choice: str) -> str:
    """Make ``choice`` the engine of the links this process builds; returns the engine that will run."""
    import os

    from corridor.links import engine

    if choice == "auto" and os.environ.get(engine.ENV_ENGINE):
        choice = os.environ[engine.ENV_ENGINE]
    try:
        chosen = engine.resolve(choice)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    os.environ[engine.ENV_ENGINE] = chosen.name
    if chosen.note and choice == "auto":
        click.echo(f"note: links run the Python delay line: {chosen.note}", err=True)
    return chosen.name
