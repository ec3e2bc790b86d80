"""``corridor run``, ``verdicts``, ``plot``, ``report``, ``export`` and ``predict``: experiments end to end.

Stage: CLI (prints). Thin commands over :mod:`corridor.workloads.runner` (run a declared
experiment into a run directory), :mod:`corridor.results.verdict`, :mod:`corridor.results.plots`
and :mod:`corridor.results.report` (analyse a run directory, no root, nothing re-run).
Bad input exits 2, a command that needs root exits 3, Ctrl-C exits 130 with the
finished points kept, a run with failed points exits 1.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from corridor.cli.common import CLUSTER_OPTION, check_pins_or_fail, complete_experiment, fail, load_cluster_or_fail
from corridor.errors import CorridorError, EmulationError, NeedsRootError
from corridor.links.backends import BACKEND_CHOICES

_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _runs_root() -> str:
    return os.path.join(os.getcwd(), "runs")


def _latest_run(name: str) -> str | None:
    root = _runs_root()
    if not os.path.isdir(root):
        return None
    found = sorted(d for d in os.listdir(root) if d.startswith(name + "-") and
                   os.path.exists(os.path.join(root, d, "manifest.json")))
    return os.path.join(root, found[-1]) if found else None


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "time left unknown"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"about {minutes}:{secs:02d} left"


def _write_verdicts(run_path: str, out: str | None = None) -> tuple[list[Any], dict[str, str]]:
    from corridor.results.rundir import derived_dir, read_run
    from corridor.results.verdict import compute_verdicts

    run = read_run(run_path)
    verdicts = compute_verdicts(run)
    return verdicts, _save_verdicts(verdicts, derived_dir(run_path, out))


def _save_verdicts(verdicts: Sequence[Any], folder: str) -> dict[str, str]:
    from corridor.results.verdict import to_csv, to_json, to_markdown

    paths = {}
    for ext, text in (("csv", to_csv(verdicts)), ("md", to_markdown(verdicts)), ("json", to_json(verdicts))):
        path = os.path.join(folder, f"verdicts.{ext}")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        paths[ext] = path
    return paths


# -- where analysis writes -----------------------------------------------------------
# Analysis needs no root, and a run directory made with sudo (or a read-only copy) may not be
# ours to write: every analysis command writes to -o DIR when given, else into RUN/derived, and
# when it cannot, it says where it could not write and how to choose another place (exit 2).


def _read_run_or_fail(run_dir: str) -> Any:
    from corridor.results.rundir import read_run

    try:
        return read_run(run_dir)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    except OSError as exc:
        fail(f"cannot read the run directory {run_dir}: {exc.strerror or exc}; analysis needs read access to "
             "its manifest.json and records.jsonl")


def _cannot_write(folder: str, exc: OSError | None, given: bool) -> str:
    why = f" ({exc.strerror or exc})" if exc is not None else " (not writable by this user)"
    if given:
        return f"cannot write to {folder}{why}; give -o a folder you can write"
    return (f"cannot write to {folder}{why}: the run directory is not writable by this user (a run started "
            "with sudo, or a read-only copy); write somewhere else with -o DIR")


def _output_folder(run_dir: str, out: str | None, sub: str | None = None) -> tuple[str, str | None]:
    """``(folder, None)`` with the folder created and writable, or ``(folder, why not)``.

    The folder is ``out`` when given, else ``RUN/derived`` (or ``RUN/derived/SUB``).
    """
    from corridor.results.rundir import DERIVED

    folder = out if out is not None else os.path.join(run_dir, DERIVED, *([sub] if sub else []))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        return folder, _cannot_write(folder, exc, out is not None)
    if not os.access(folder, os.W_OK | os.X_OK):
        return folder, _cannot_write(folder, None, out is not None)
    return folder, None


def _writable_or_fail(run_dir: str, out: str | None, sub: str | None = None) -> str:
    folder, problem = _output_folder(run_dir, out, sub)
    if problem is not None:
        fail(problem)
    return folder


_WIDE = click.option("--wide", is_flag=True,
                     help="Every column of the verdict table (corridor, model, stop distance), however wide.")


def _print_verdicts(verdicts: Sequence[Any], as_json: bool, wide: bool = False, run: Any = None) -> None:
    """The verdict table, then (for a ``run`` with faults, not in JSON) one row per workload per fault event."""
    import shutil

    from corridor.results.verdict import format_compact, format_table, to_json

    if as_json:
        from corridor.cli.jsonout import echo_json

        echo_json({"verdicts": json.loads(to_json(verdicts))})
    elif wide:
        click.echo(format_table(verdicts))
    else:
        import textwrap

        from corridor.results.verdict import summary_paragraph

        columns = max(60, shutil.get_terminal_size((100, 24)).columns)
        click.echo(format_compact(verdicts, columns=columns))
        click.echo("\n" + textwrap.fill(summary_paragraph(verdicts), columns))
    if run is not None and not as_json and any(r.get("kind") == "fault" for r in run.records):
        from corridor.spec.faults import fault_impacts, fault_rows, format_fault_table

        click.echo("\nFaults: the measured stall of each workload per fault event, beside the model's"
                   "\n(σ: the spread of the point's other steps or TTFTs)\n")
        click.echo(format_fault_table(fault_rows(fault_impacts(run))))


@click.command("run")
@click.argument("experiment", required=False, shell_complete=complete_experiment)
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run directory to write (default: runs/NAME-UTCTIME).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out (default: the newest run of this experiment under runs/), "
                   "skipping finished points.")
@click.option("--link-backend", type=click.Choice(list(BACKEND_CHOICES)), default=None,
              help="Override the experiment's backend axis for every point.")
@click.option("--precision", "precision_text", default="10%", show_default=True, metavar="FRACTION",
              help="Repeat a workload until its compared statistic's 95 % interval is within this much of the "
                   "value (half-width), or its verdict is decided.")
@click.option("--max-repetitions", type=click.IntRange(1, 100), default=3, show_default=True,
              help="At most this many repetitions of any point (1: never repeat).")
@click.option("--budget", "budget_text", default="270s", show_default=True, metavar="DURATION",
              help="Start no further repetition that would end the run after this long (e.g. 10min).")
@CLUSTER_OPTION
@_JSON
@_WIDE
@click.pass_context
def run_cmd(ctx: click.Context, experiment: str | None, out: str | None, resume: bool, link_backend: str | None,
            precision_text: str, max_repetitions: int, budget_text: str, cluster_file: Path | None, as_json: bool,
            wide: bool) -> None:
    """Run EXPERIMENT (default: the built-in quickstart) and print its verdict table.

    Every verdict compares a statistic with its 95 % confidence interval. After
    the planned points, workloads whose verdict is inconclusive or whose interval
    is wider than --precision run again (the local baseline and the placement
    interleaved) until precise, --max-repetitions, or the --budget.

    Progress goes to stderr; the run directory keeps every finished point, so
    Ctrl-C loses only the point in flight and --resume continues from there.
    With --cluster FILE every point's network is spread over the file's servers
    (docs/cluster.md); the run directory is written here, and each point records
    where its nodes ran.
    """
    from corridor.errors import UnitError
    from corridor.spec.units import parse_duration_ms, parse_fraction
    from corridor.workloads.runner import Precision

    try:
        target = parse_fraction(precision_text)
        budget_s = parse_duration_ms(budget_text) / 1e3
    except UnitError as exc:
        fail(f"--precision/--budget: {exc}")
    if not 0 < target < 1:
        fail(f"--precision {precision_text}: give a fraction above 0 and below 1, e.g. 10% or 0.05")
    precision = Precision(target=target, max_repetitions=max_repetitions, budget_s=budget_s)
    from corridor.spec.experiment import load_experiment
    from corridor.workloads.runner import Progress, run_experiment

    try:
        exp = load_experiment(experiment)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    if out is None:
        if resume:
            out = _latest_run(exp.name)
            if out is None:
                fail(f"nothing to resume: no run of {exp.name!r} under {_runs_root()}; give --out")
        else:
            out = os.path.join(_runs_root(), f"{exp.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    assert out is not None
    cluster = load_cluster_or_fail(cluster_file)
    if cluster is not None:
        check_pins_or_fail(exp, cluster)
    from corridor.workloads.runner import cluster_network_factory

    factory = None if cluster is None else cluster_network_factory(cluster)
    click.echo(f"{'resuming' if resume else 'running'} {exp.name} ({exp.source}) -> {out}", err=True)

    from corridor.cli.progress import ProgressLine

    bar = ProgressLine()

    def progress(p: Progress) -> None:
        bar.step(f"[{p.done}/{p.total}] {_fmt_eta(p.eta_s)}: {p.message}", done=p.done, total=p.total,
                 eta_s=p.eta_s, message=p.message)

    # Under sudo the run goes to the user who started it, however the command ends (see _give_run_to_user).
    parent = os.path.dirname(os.path.abspath(out))
    created_parent = None if os.path.isdir(parent) else parent
    ctx.call_on_close(lambda: _give_run_to_user(out, created_parent))
    started = time.monotonic()
    try:
        with bar:
            run_experiment(exp, out, resume=resume, backend=link_backend, progress=progress, command=sys.argv,
                           precision=precision, network_factory=factory)
    except KeyboardInterrupt:
        from corridor.results.rundir import read_run

        try:
            done = len(read_run(out).points)
        except CorridorError:
            done = 0
        click.echo(f"\ninterrupted: {done} finished points are kept in {out}; continue with:\n"
                   f"  corridor run {experiment or ''} --out {out} --resume".replace("  --", " --"), err=True)
        ctx.exit(130)
    except NeedsRootError as exc:
        fail(str(exc), code=exc.exit_code)
    except EmulationError as exc:
        fail(f"{exc}\nfinished points are kept in {out}; after fixing it continue with --out {out} --resume",
             code=exc.exit_code)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    verdicts, paths = _write_verdicts(out)
    from corridor.results.rundir import read_run

    run = read_run(out)
    _print_verdicts(verdicts, as_json, wide, run)
    failed = [p for p in run.points.values() if p.get("status") != "ok"]
    click.echo(f"\n{len(run.points)} points in {time.monotonic() - started:.0f} s; run directory {out}; "
               f"verdicts also in {paths['csv']} and {paths['md']}", err=True)
    if failed:
        click.echo(f"{len(failed)} points failed: " + "; ".join(
            f"{p['point_id']}: {p.get('error')}" for p in failed[:5]), err=True)
        ctx.exit(1)


def _give_run_to_user(run_dir: str, created_parent: str | None) -> None:
    """Hand a run made under sudo (and the ``runs/`` folder, when this run created it) to the invoking user."""
    from corridor.results.rundir import give_to_invoking_user

    if os.path.isdir(run_dir):
        give_to_invoking_user(run_dir)
    if created_parent is not None and os.path.isdir(created_parent):
        give_to_invoking_user(created_parent, recursive=False)


@click.command("verdicts")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Folder for verdicts.csv/.md/.json (default RUN_DIR/derived).")
@_JSON
@_WIDE
def verdicts_cmd(run_dir: str, out: str | None, as_json: bool, wide: bool) -> None:
    """Print the verdict table of a run directory (and save it as CSV, Markdown, JSON).

    The table is printed even where the files cannot be saved (a run directory made with
    sudo): a note on stderr says so, and -o DIR saves them elsewhere.
    """
    from corridor.results.verdict import compute_verdicts

    run = _read_run_or_fail(run_dir)
    try:
        verdicts = compute_verdicts(run)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    folder, problem = _output_folder(run_dir, out)
    if problem is None:
        try:
            _save_verdicts(verdicts, folder)
        except OSError as exc:
            problem = _cannot_write(folder, exc, out is not None)
    if problem is not None and out is not None:
        fail(problem)
    _print_verdicts(verdicts, as_json, wide, run)
    if problem is not None:
        click.echo(f"note: the table was not saved: {problem}", err=True)


@click.command("plot")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-p", "--figure", "names", multiple=True, metavar="NAME",
              help="Draw only this figure (repeatable); an unknown name lists the run's figures.")
@click.option("-o", "--out", type=click.Path(), default=None,
              help="Folder for the figures (default RUN_DIR/derived/figures, or RUN_DIR/derived/figures/compare "
                   "of the first run for several), or a FILE.pdf|svg|png whose extension sets the format.")
@_JSON
def plot_cmd(run_dirs: tuple[str, ...], names: tuple[str, ...], out: str | None, as_json: bool) -> None:
    """Redraw the figures of a run from its run directory alone (PNG and SVG; no root, nothing re-run).

    With several run directories, each figure that has per-run series (training against RTT, TTFT and
    TPOT against distance, TTFT CDFs, link throughput and delay) is drawn once with every run's series
    overlaid, a legend entry per run.
    """
    from corridor.results.plots import (
        FILE_FORMATS,
        build_figures,
        compare_runs,
        pick_figures,
        run_labels,
        save_figure_file,
        save_figures,
    )

    runs = [_read_run_or_fail(run_dir) for run_dir in run_dirs]
    run_dir = run_dirs[0]
    to_file = out is not None and os.path.splitext(out)[1].lower().lstrip(".") in FILE_FORMATS
    # a file's own folder must be writable; a folder (or the default) is made as before
    file_path = out if to_file else None
    sub = "figures" if len(runs) == 1 else os.path.join("figures", "compare")
    folder = _writable_or_fail(run_dir, (os.path.dirname(file_path) or ".") if file_path else out, sub)
    try:
        if len(runs) == 1:
            built = build_figures(runs[0])
        else:
            built = compare_runs(list(zip(run_labels(run_dirs), [build_figures(run) for run in runs], strict=True)))
        figures = pick_figures(built, names)
        written = save_figure_file(figures, file_path) if file_path else save_figures(figures, folder)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    except OSError as exc:
        fail(_cannot_write(folder, exc, out is not None))
    if as_json:
        from corridor.cli.jsonout import echo_json

        echo_json({"files": written})
        return
    for name, paths in written.items():
        click.echo(f"  {name:28s} {'  '.join(paths)}")
    click.echo(f"{len(written)} figures in {folder}")


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Folder for report.html, report.md and figures/ (default RUN_DIR/derived).")
@_JSON
def report_cmd(run_dir: str, out: str | None, as_json: bool) -> None:
    """Write one self-contained HTML report (verdicts first) and the same as Markdown."""
    from corridor.results.report import write_report

    run = _read_run_or_fail(run_dir)
    folder = _writable_or_fail(run_dir, out)
    try:
        html_path, md_path = write_report(run, folder)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    except OSError as exc:
        fail(_cannot_write(folder, exc, out is not None))
    if as_json:
        from corridor.cli.jsonout import echo_json

        echo_json({"html": html_path, "markdown": md_path})
    else:
        click.echo(f"report: {html_path}\nmarkdown: {md_path}")


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--csv", "as_csv", is_flag=True,
              help="Write CSV files, one per record kind (the default when no format is given).")
@click.option("--flent", "as_flent", is_flag=True,
              help="Write each point's WAN link time series as a Flent data file (flent -i FILE -p totals).")
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the exported files (default RUN_DIR/derived/export).")
@_JSON
def export_cmd(run_dir: str, as_csv: bool, as_flent: bool, out: str | None, as_json: bool) -> None:
    """Export a run for other tools: CSV (records-KIND.csv, points.csv, verdicts.csv) and/or Flent data files.

    With --flent, each point and WAN link that recorded link samples becomes one
    *.flent.gz file of Flent's tcp_bidirectional test: throughput a->b as "TCP upload",
    b->a as "TCP download", and the planned RTT plus queueing delay as the "Ping" series.
    """
    if not as_csv and not as_flent:
        as_csv = True
    run = _read_run_or_fail(run_dir)
    folder = _writable_or_fail(run_dir, out, "export")
    written: dict[str, int] = {}
    try:
        if as_csv:
            written.update(_export_csv(run, folder))
        if as_flent:
            written.update(_export_flent(run, folder))
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    except OSError as exc:
        fail(_cannot_write(folder, exc, out is not None))
    if as_json:
        from corridor.cli.jsonout import echo_json

        echo_json({"files": written})
        return
    for path, count in written.items():
        click.echo(f"  {count:6d} rows  {path}")


def _export_csv(run: Any, folder: str) -> dict[str, int]:
    from corridor.results.verdict import compute_verdicts, to_csv

    written: dict[str, int] = {}
    kinds = sorted({str(r.get("kind")) for r in run.records})
    for kind in kinds:
        rows = [_flat(r) for r in run.records if r.get("kind") == kind]
        name = "points" if kind == "point" else f"records-{kind}"
        path = os.path.join(folder, f"{name}.csv")
        _write_csv(path, rows)
        written[path] = len(rows)
    path = os.path.join(folder, "verdicts.csv")
    verdicts = compute_verdicts(run)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(to_csv(verdicts))
    written[path] = len(verdicts)
    return written


def _export_flent(run: Any, folder: str) -> dict[str, int]:
    from corridor.errors import RunDirError
    from corridor.results.flent import flent_files, write_flent

    files = flent_files(run)
    if not files:
        raise RunDirError(f"{run.path} has no link_sample records, so there is no time series for Flent; "
                          "link samples are recorded for points that cross a WAN link")
    written: dict[str, int] = {}
    for item in files:
        path = os.path.join(folder, item.name)
        write_flent(item.data, path)
        written[path] = len(item.data["x_values"])
    return written


def _flat(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """One CSV row: nested fields joined with dots, except the sweep (``sweep_distance_km``, as workload
    records name it); a list of plain values as one ``;``-separated cell, a list of mappings as
    ``key.0.field`` columns. No cell holds JSON."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, "sweep_" if name == "sweep" else name + "."))
        elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            out.update(_flat({str(i): v for i, v in enumerate(value)}, name + "."))
        elif isinstance(value, list):
            out[name] = ";".join("" if v is None else str(v) for v in value)
        else:
            out[name] = value
    return out


def _write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@click.command("predict")
@click.argument("experiment", required=False, shell_complete=complete_experiment)
@_JSON
@click.option("--wide", is_flag=True, help="Every column of the table, unwrapped, however wide.")
def predict_cmd(experiment: str | None, as_json: bool, wide: bool) -> None:
    """The analytic model alone for EXPERIMENT: no network, no root, seconds. MODEL-ONLY figures.

    Works at scales no machine can emulate (tens of thousands of GPUs, N x 400G
    links): the verdict and the distance at which each workload stops tolerating
    come from formulas, not from measurement.
    """
    from corridor.analytic.prediction import predict_experiment
    from corridor.cli.jsonout import echo_json
    from corridor.cli.table import Column, render
    from corridor.spec.experiment import load_experiment
    from corridor.spec.units import format_rate

    t0 = time.monotonic()
    try:
        rows = predict_experiment(load_experiment(experiment))
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    if as_json:
        echo_json({"model_only": True, "rows": rows})
        return
    click.echo("MODEL ONLY: analytic predictions, nothing was emulated or measured.\n")
    columns = [Column("workload"), Column("placement", wrap=True, min_width=12),
               Column("corridor", wrap=True, min_width=14, drop_order=1), Column("model", wrap=True, min_width=14),
               Column("local model", wrap=True, min_width=14, drop_order=2),
               Column("model verdict", wrap=True, min_width=9), Column("stops tolerating at", wrap=True, min_width=24)]
    table = []
    for row in rows:
        corridor = row["corridor"]
        path = f"{corridor['max_path_km']:,.0f} km, RTT {corridor['max_rtt_ms']:.1f} ms"
        if corridor.get("min_rate_mbps"):
            path += f", {format_rate(corridor['min_rate_mbps'])}"
        table.append([row["workload"], row["placement"], path, _model_cell(row, "model_"),
                      _model_cell(row, "local_model_"), str(row.get("model_verdict") or row.get("error") or "-"),
                      str(row.get("note") or "-").replace("model: ", "")])
    for line in render(columns, table, wide=wide, indent=0, rule=True):
        click.echo(line)
    click.echo(f"\nmodel-only; {len(rows)} rows in {time.monotonic() - t0:.1f} s")


def _model_cell(row: dict[str, Any], prefix: str) -> str:
    parts = []
    if f"{prefix}step_time_s" in row:
        parts.append(f"step {row[f'{prefix}step_time_s'] * 1e3:.1f} ms")
    if f"{prefix}utilisation" in row:
        parts.append(f"util {row[f'{prefix}utilisation'] * 100:.0f} %")
    if f"{prefix}ttft_s" in row:
        parts.append(f"TTFT {row[f'{prefix}ttft_s'] * 1e3:.0f} ms")
    if f"{prefix}tpot_s" in row:
        parts.append(f"TPOT {row[f'{prefix}tpot_s'] * 1e3:.0f} ms")
    return ", ".join(parts) or "-"


def register(cli: click.Group) -> None:
    for command in (run_cmd, verdicts_cmd, plot_cmd, report_cmd, export_cmd, predict_cmd):
        cli.add_command(command)
