"""``corridor validate``: corridor's model beside the published record, in one table.

Stage: CLI (prints). A thin command over :mod:`corridor.validation.suite`; it
runs no network and needs no root, so it works anywhere in about a second.
"""

from __future__ import annotations

import json

import click

from corridor.validation.suite import run_suite


def _error(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


@click.command("validate")
@click.option("--json", "as_json", is_flag=True, help="Print the suite as JSON (with format_version).")
def validate(as_json: bool) -> None:
    """Compare corridor's model with published figures: CAICT latencies, Streaming DiLoCo Table 4, MLPerf SLOs.

    Each row: the case, the published figure, corridor's model figure and the
    error (model over published, minus one). Sources and assumptions per case
    are in docs/validation.md.
    """
    doc = run_suite()
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False))
        return
    header = ["case", "published", "corridor model", "error", "note"]
    table = [header] + [[r["case"], r["published"], r["model"], _error(r["error"]), r["note"]] for r in doc["rows"]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    source = None
    for i, row in enumerate(table):
        if i and doc["rows"][i - 1]["source"] != source:
            source = doc["rows"][i - 1]["source"]
            click.echo(f"\n{source}")
        cells = [c.ljust(w) if j != 3 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=False))]
        click.echo("  " + "  ".join(cells) + ("  " + row[-1] if row[-1] else ""))


def register(group: click.Group) -> None:
    group.add_command(validate)
