"""``corridor schema``: print the JSON Schema of topology or experiment files.

Stage: CLI (prints). A thin command over :mod:`corridor.spec.schema`. The output
is a JSON Schema (draft 2020-12) document, for an editor's YAML language
server or any schema validator; it is not one of the ``--json`` outputs, so it
carries ``$schema`` rather than ``format_version``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from corridor.cli.common import fail, out_option
from corridor.spec.schema import SCHEMA_KINDS, schema_for


@click.command("schema")
@click.argument("kind", type=click.Choice(list(SCHEMA_KINDS)))
@out_option(type=click.Path(dir_okay=False, path_type=Path), default=None,
            help="Write the schema to this file instead of printing it.")
def schema(kind: str, out: Path | None) -> None:
    """Print the JSON Schema (draft 2020-12) of KIND files: topology or experiment.

    Point an editor's YAML language server at it with a first line such as
    `# yaml-language-server: $schema=topology.schema.json` (docs/topologies.md).
    """
    text = json.dumps(schema_for(kind), indent=2, sort_keys=False)
    if out is None:
        click.echo(text)
        return
    try:
        out.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}; give -o a file you can write")
    click.echo(f"wrote {out}")


def register(cli: click.Group) -> None:
    cli.add_command(schema)
