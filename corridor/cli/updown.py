"""CLI: ``corridor up``, ``corridor exec`` and ``corridor down``: run real programs across a corridor.

``up`` builds a topology and holds it in the foreground until Ctrl-C or
``corridor down``; ``exec`` runs any command inside one of its hosts, with the
command's own stdin, stdout, stderr and exit status; ``down`` takes it down.
The logic lives in :mod:`corridor.emulation.session`.
"""

from __future__ import annotations

import os
import sys

import click

from corridor.cli.common import (
    BACKEND_OPTION,
    Duration,
    complete_topology,
    fail,
    link_override_options,
    load_plan_or_fail,
)
from corridor.cli.jsonout import json_text
from corridor.cli.table import Column, render

#: Exit status of ``exec`` when the command cannot be found or run (as shells use).
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


def register(cli: click.Group) -> None:
    cli.add_command(up)
    cli.add_command(exec_command)
    cli.add_command(down)


@click.command()
@click.argument("topology", shell_complete=complete_topology)
@BACKEND_OPTION
@link_override_options
@click.option("--name", default=None, help="Name of this network for exec and down (default: the topology's name).")
@click.option("--json", "as_json", is_flag=True, help="Print the network's hosts as one JSON line once it is up.")
def up(topology: str, link_backend: str, rate: str | None, delay: str | None, loss: str | None, queue: str | None,
       name: str | None, as_json: bool) -> None:
    """Build TOPOLOGY and keep it running until Ctrl-C or `corridor down`.

    Prints every host with its site, role and address, then waits. In another terminal,
    `corridor exec HOST -- CMD` runs a command inside a host and `corridor down` takes the
    network down (so does Ctrl-C here, SIGTERM or closing the terminal). A killed `up`
    leaves a run that `corridor clean` removes. --rate, --delay, --loss and --queue change
    every WAN link, as for `corridor check`.
    """
    from corridor.emulation.session import hold, open_session

    plan = load_plan_or_fail(topology, rate=rate, delay=delay, loss=loss, queue=queue)
    session_name = name or plan.name
    try:
        with open_session(plan, name=session_name, backend=link_backend) as (_net, info):
            if as_json:
                click.echo(json_text(info.as_dict(), indent=None))
            else:
                click.echo(f"network {info.name} up: {plan.name}, link backend {info.backend} "
                           f"({info.backend_reason}), pid {info.owner_pid}")
                for line in render([Column("host"), Column("site"), Column("role"), Column("address")],
                                   [[h.name, h.site, h.role, h.ip] for h in info.hosts], indent=0):
                    click.echo(line)
                for link in plan.wan_links:
                    d = link.a_to_b
                    click.echo(f"WAN {link.name}: {d.rate_mbps:g} Mbit/s, {d.delay_ms:g} ms one way")
                click.echo(f"ready: `corridor exec {info.hosts[0].name} -- CMD`; `corridor down {info.name}` "
                           "or Ctrl-C ends it")
            hold()
    except KeyboardInterrupt:
        if not as_json:
            click.echo("network down", err=True)


@click.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--session", "session_name", default=None, help="Which running network (default: the only one).")
@click.option("--keep-hostname", is_flag=True,
              help="Run under this machine's host name instead of the emulated host's name.")
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(session_name: str | None, keep_hostname: bool, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside HOST of a running network: `corridor exec HOST -- CMD ARGS...`.

    The command replaces this process inside the host's network namespace, so its stdin,
    stdout, stderr and exit status are passed through unchanged, and its host name is
    HOST's name. Any node of the network works, routers and wires too.
    """
    from corridor.emulation.session import enter_host, find_session

    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        fail("give the command to run after --, e.g. `corridor exec rem-gpu1 -- ping -c 3 10.2.0.1`")
    info = find_session(session_name)
    enter_host(info, host, set_hostname=not keep_hostname)
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        click.echo(f"corridor exec: {argv[0]}: command not found in {host}", err=True)
        sys.exit(EXIT_NOT_FOUND)
    except OSError as exc:
        click.echo(f"corridor exec: {argv[0]}: {exc.strerror}", err=True)
        sys.exit(EXIT_NOT_EXECUTABLE)


@click.command()
@click.argument("name", required=False)
@click.option("--timeout", "timeout_s", default="60s", show_default=True, type=Duration(min_s=1.0),
              help="How long to wait for the network's `corridor up` to finish its teardown, e.g. 60s.")
def down(name: str | None, timeout_s: float) -> None:
    """Take down the running network NAME (default: the only one), or what a killed `up` of it left."""
    from corridor.emulation.network import require_root
    from corridor.emulation.session import find_session, list_sessions, take_down
    from corridor.errors import EmulationError

    require_root("`corridor down`")
    try:
        info = find_session(name)
    except EmulationError:
        # A killed `up`: its session record is still there, so take down what it left.
        dead = [s for s in list_sessions(include_dead=True) if name is None or s.name == name]
        if len(dead) != 1:
            raise
        info = dead[0]
    ended = take_down(info, timeout_s=timeout_s)
    extra = f"; ended {len(ended)} processes its `corridor up` left" if ended else ""
    click.echo(f"network {info.name} down{extra}")
