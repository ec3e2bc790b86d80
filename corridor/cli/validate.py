"""``corridor validate``: corridor's model beside the published record, in one table.

Stage: CLI (prints). A thin command over :mod:`corridor.validation.suite`; it
runs no network and needs no root, so it works anywhere in about a second.
``--emulate`` is the exception: it runs the experiments of
``experiments/validation/`` (root, about two minutes) and compares them.
"""

from __future__ import annotations

import os
import sys
import time

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
@click.option("--emulate", is_flag=True,
              help="Run every experiment of experiments/validation/ (root; about two minutes), one run "
                   "directory each under --out, then compare them as --emulated does.")
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), default=None,
              help="With --emulate: the folder for the run directories (default runs/validation-UTCTIME). "
                   "Given again after an interruption, the runs continue where they stopped.")
def validate(as_json: bool, wide: bool, emulated: tuple[str, ...], emulate: bool, out: str | None) -> None:
    """Compare corridor's model with published figures: CAICT latencies, Streaming DiLoCo Table 4, MLPerf SLOs.

    Each row: the case, the published figure, corridor's model figure and the
    error (model over published, minus one). Sources and assumptions per case
    are in docs/validation.md.
    """
    if out is not None and not emulate:
        from corridor.cli.common import fail

        fail("-o/--out is where --emulate writes its runs; add --emulate (or compare existing runs with "
             "--emulated DIR)")
    doc = run_suite()
    if emulate:
        if out is None:
            from corridor.cli.run import _runs_root

            out = os.path.join(_runs_root(), f"validation-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        from corridor.cli.run import _give_run_to_user

        parent = os.path.dirname(os.path.abspath(out))
        created_parent = None if os.path.isdir(parent) else parent
        try:
            emulated = (*emulated, *_emulate(out))
        finally:
            # under sudo the runs go to the user who started the command, however it ends
            _give_run_to_user(out, created_parent)
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


def validation_experiments() -> list[str]:
    """The scale-model cells of the validation suite: ``experiments/validation/*.yaml`` of this checkout."""
    from corridor.spec.experiment import default_experiment_path

    folder = os.path.join(os.path.dirname(default_experiment_path()), "validation")
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".yaml"))


def _emulate(out_dir: str) -> list[str]:
    """Run each validation experiment into ``out_dir/NAME`` (continuing one already there); their directories."""
    from corridor.cli.common import fail
    from corridor.cli.progress import ProgressLine
    from corridor.errors import CorridorError
    from corridor.results.rundir import read_run
    from corridor.spec.experiment import load_experiment
    from corridor.workloads.runner import Precision, Progress, run_experiment

    if os.geteuid() != 0:
        fail("--emulate builds emulated networks and needs root; run it with sudo (or compare run directories "
             "made earlier with --emulated DIR, which needs none)", code=3)
    files = validation_experiments()
    if not files:
        fail("no experiments/validation/*.yaml in this checkout to emulate")
    try:
        experiments = [load_experiment(f) for f in files]
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    dirs: list[str] = []
    started = time.monotonic()
    for i, exp in enumerate(experiments, 1):
        run_dir = os.path.join(out_dir, exp.name)
        resume = os.path.isfile(os.path.join(run_dir, "manifest.json"))
        click.echo(f"[{i}/{len(experiments)}] {'resuming' if resume else 'running'} {exp.name} -> {run_dir}",
                   err=True)
        bar = ProgressLine()

        def progress(p: Progress, bar: ProgressLine = bar, i: int = i) -> None:
            bar.step(f"[{i}/{len(experiments)}] {p.message}", done=p.done, total=p.total, eta_s=p.eta_s,
                     message=p.message)

        try:
            with bar:
                run_experiment(exp, run_dir, resume=resume, progress=progress, command=sys.argv,
                               precision=Precision(max_repetitions=1))
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted: finished points are kept under {out_dir}; continue with\n"
                       f"  corridor validate --emulate -o {out_dir}", err=True)
            raise SystemExit(130) from None
        except CorridorError as exc:
            fail(f"{exp.name}: {exc}\nfinished points are kept in {run_dir}; after fixing it continue with\n"
                 f"  corridor validate --emulate -o {out_dir}", code=exc.exit_code)
        failed = [p for p in read_run(run_dir).points.values() if p.get("status") != "ok"]
        if failed:
            fail(f"{exp.name}: {len(failed)} points failed ({failed[0].get('error')}); see {run_dir}", code=1)
        dirs.append(run_dir)
    click.echo(f"{len(dirs)} validation experiments emulated in {time.monotonic() - started:.0f} s", err=True)
    return dirs


def register(group: click.Group) -> None:
    group.add_command(validate)
