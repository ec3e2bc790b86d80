"""``corridor validate``: corridor's model beside the published record, in one table.

Stage: CLI (prints). A thin command over :mod:`corridor.validation.suite`; it
runs no network and needs no root, so it works anywhere in about a second.
"""

from __future__ import annotations

import click

from corridor.cli.jsonout import echo_json
from corridor.cli.table import Column, fit_text, render
from corridor.validation.suite import run_suite


def _error(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


@click.command("validate")
@click.option("--json", "as_json", is_flag=True, help="Print the suite as JSON (with format_version).")
@click.option("--wide", is_flag=True, help="Every column on one line, however wide.")
@click.option("--emulated", "emulated", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A run directory of experiments/validation/ (repeatable): its measured compute utilisation "
                   "beside the model's; one cell given at two scales is compared with itself.")
def validate(as_json: bool, wide: bool, emulated: tuple[str, ...]) -> None:
    """Compare corridor's model with published figures: CAICT latencies, Streaming DiLoCo Table 4, MLPerf SLOs.

    Each row: the case, the published figure, corridor's model figure and the
    error (model over published, minus one). Sources and assumptions per case
    are in docs/validation.md.
    """
    doc = run_suite()
    if emulated:
        from corridor.validation import emulated as emu

        cells = [cell for path in emulated for cell in emu.compare_run_dir(path)]
        doc["emulated"] = emu.rows(cells)
        doc["emulated_scales"] = emu.scale_rows(emu.scale_pairs(cells))
    if as_json:
        echo_json(dict(sorted(doc.items())))
        return
    columns = [Column("case", wrap=True, min_width=16), Column("published", wrap=True, min_width=12),
               Column("corridor model", wrap=True, min_width=12), Column("error", right=True),
               Column("note", wrap=True, min_width=16, drop_order=1)]
    groups: dict[str, list[list[str]]] = {}
    for r in doc["rows"]:
        groups.setdefault(r["source"], []).append([r["case"], r["published"], r["model"], _error(r["error"]),
                                                   r["note"]])
    for source, rows in groups.items():
        click.echo("")
        for line in fit_text(source) + render(columns, rows, wide=wide):
            click.echo(line)
    if doc.get("emulated"):
        click.echo("")
        emu_columns = [Column("case", wrap=True, min_width=16), Column("published", wrap=True, min_width=12),
                       Column("model", right=True), Column("scaled emulation", right=True),
                       Column("error", right=True), Column("note", wrap=True, min_width=16, drop_order=1)]
        emu_rows = [[r["case"], r["published"], r["model"], r["emulated"], _error(r["error"]), r["note"]]
                    for r in doc["emulated"]]
        for line in fit_text("Scale-model emulation (compute utilisation, emulated over model)") + render(
                emu_columns, emu_rows, wide=wide):
            click.echo(line)
    if doc.get("emulated_scales"):
        click.echo("")
        scale_columns = [Column("case", wrap=True, min_width=16), Column("scale s", right=True),
                         Column("measured", right=True), Column("scale s'", right=True),
                         Column("measured", right=True), Column("difference", right=True), Column("note")]
        scale_rows = [[r["case"], f"1/{r['scale_a']:g}", f"{r['measured_a']:.1%}", f"1/{r['scale_b']:g}",
                       f"{r['measured_b']:.1%}", _error(r["difference"]), r["note"]] for r in doc["emulated_scales"]]
        for line in fit_text("One cell at two scale factors (measured compute utilisation)") + render(
                scale_columns, scale_rows, wide=wide):
            click.echo(line)


def register(group: click.Group) -> None:
    group.add_command(validate)
