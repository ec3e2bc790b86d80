"""The report of a run: one self-contained HTML file and the same content as Markdown.

Stage: report (pure; reads a run directory and writes only into the output
folder it is given, ``RUN/derived`` by default). Order: the verdict table first
(it answers the question), then the evidence (figures, per-point facts), then
the configuration (the resolved experiment, host, versions, backend). The HTML
embeds its figures as base64 PNG and has no scripts or external references, so
it opens anywhere, offline; the Markdown links to the PNG files saved beside it.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from corridor.results.plots import build_figures, save_figures
from corridor.results.rundir import RunDir
from corridor.results.verdict import TABLE_COLUMNS, Verdict, compute_verdicts, summary_paragraph, table_rows

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 1.2em 2em; color: #111;
       max-width: 1400px; }
h1 { font-size: 1.5em; margin: 0 0 .2em 0; }
h2 { font-size: 1.2em; border-bottom: 1px solid #999; padding-bottom: .2em; margin-top: 1.6em; }
p.lede { margin: .2em 0 .8em 0; color: #333; }
table { border-collapse: collapse; font-size: .85em; }
th, td { border: 1px solid #888; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #e8e8e8; }
td.v-tolerates { background: #f4f4f4; font-weight: bold; }
td.v-marginal { background: #d8d8d8; font-weight: bold; font-style: italic; }
td.v-does-not-tolerate { background: #555; color: #fff; font-weight: bold; }
td.v-no-data { color: #666; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: .85em; color: #333; }
pre { background: #f6f6f6; padding: .6em; font-size: .78em; overflow-x: auto; }
.model-only { font-size: .8em; color: #444; }
"""


def write_report(run: RunDir, out_dir: str) -> tuple[str, str]:
    """Render figures and write ``report.html`` and ``report.md`` into ``out_dir``; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    verdicts = compute_verdicts(run)
    built = build_figures(run, verdicts)
    captions = {data.name: (data.title, data.caption) for data in built}
    figures = save_figures(built, os.path.join(out_dir, "figures"))
    html_path = os.path.join(out_dir, "report.html")
    md_path = os.path.join(out_dir, "report.md")
    with open(html_path, "w", encoding="utf-8") as handle:
        handle.write(render_html(run, verdicts, figures, captions))
    with open(md_path, "w", encoding="utf-8") as handle:
        handle.write(render_markdown(run, verdicts, figures, captions, relative_to=out_dir))
    return html_path, md_path


def _title(run: RunDir) -> str:
    exp = run.experiment
    return f"corridor: {exp.get('name', 'experiment')}"


def _lede(run: RunDir) -> str:
    exp = run.experiment
    summary = run.summary or {}
    done = len(run.points)
    total = len(run.planned_points)
    backends = "; ".join(summary.get("backends", [])) or "unknown"
    status = summary.get("status", "unknown")
    return (f"{exp.get('description') or ''} Topology {exp.get('topology')}; {done} of {total} points finished "
            f"({status}); link backend: {backends}; run started {run.manifest.get('created_utc')} on "
            f"{run.manifest.get('host')} ({run.manifest.get('kernel')}).").strip()


def _points_rows(run: RunDir) -> list[dict[str, str]]:
    rows = []
    for planned in run.planned_points:
        marker = run.points.get(planned["point_id"])
        rows.append({
            "point": planned["point_id"],
            "status": str(marker.get("status")) if marker else "not run",
            "session": str(marker.get("session", "")) if marker else "",
            "duration_s": f"{marker.get('duration_s', 0):.1f}" if marker else "",
            "backend": str(marker.get("backend") or "") if marker else "",
            "records": str(marker.get("n_records", "")) if marker else "",
            "error": str(marker.get("error") or "") if marker else "",
        })
    return rows


_FAULTS_LEDE = ("Per workload per fault event: the measured stall (training: the step holding the event minus "
                "the median step; chat: the TTFT of the requests in flight at the event minus the median TTFT) "
                "beside the analytic model's stall of a TCP transfer crossing the event; σ is the spread of "
                "the point's other steps or TTFTs (1.4826 x their median absolute deviation).")
_FAULTS_LEDE_HTML = f'<p class="model-only">{html.escape(_FAULTS_LEDE)}</p>'


def _fault_rows(run: RunDir) -> list[dict[str, str]]:
    """The Faults section's rows (:func:`corridor.spec.faults.fault_rows`); empty for a run without faults."""
    if not any(r.get("kind") == "fault" for r in run.records):
        return []
    from corridor.spec.faults import fault_impacts, fault_rows

    return fault_rows(fault_impacts(run))


def _config(run: RunDir) -> dict[str, Any]:
    keep = {k: v for k, v in run.manifest.items() if k not in ("points",)}
    return keep


def render_html(run: RunDir, verdicts: Sequence[Verdict], figures: Mapping[str, Sequence[str]],
                captions: Mapping[str, tuple[str, str]]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(_title(run))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(_title(run))}</h1>",
        f'<p class="lede">{e(_lede(run))}</p>',
        '<h2 id="verdicts">Verdicts</h2>',
        f'<p class="summary">{e(summary_paragraph(verdicts))}</p>',
        _html_table(verdicts),
        '<p class="model-only">"model" and "stops tolerating at" come from the analytic model alone '
        "(model-only); everything else is measured on the emulated corridor.</p>",
    ]
    faults = _fault_rows(run)
    if faults:
        parts += ['<h2 id="faults">Faults</h2>', _FAULTS_LEDE_HTML, _html_rows(faults)]
    parts.append('<h2 id="evidence">Evidence</h2>')
    for name, paths in figures.items():
        png = next((p for p in paths if p.endswith(".png")), None)
        if png is None:
            continue
        with open(png, "rb") as handle:
            encoded = base64.b64encode(handle.read()).decode("ascii")
        title, caption = captions.get(name, (name, ""))
        parts.append(f'<figure id="fig-{e(name)}"><img alt="{e(title)}" src="data:image/png;base64,{encoded}">'
                     f"<figcaption><b>{e(title)}.</b> {e(caption)}</figcaption></figure>")
    parts.append("<h3>Points</h3>")
    parts.append(_html_rows(_points_rows(run)))
    parts.append('<h2 id="configuration">Configuration</h2>')
    parts.append(f"<pre>{e(json.dumps(_config(run), indent=2, sort_keys=True, default=str))}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_table(verdicts: Sequence[Verdict]) -> str:
    rows = table_rows(verdicts)
    if not rows:
        return "<p>No verdicts: no points finished.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in TABLE_COLUMNS)
    body = []
    for row in rows:
        cells = []
        for c in TABLE_COLUMNS:
            cls = f' class="v-{row[c].replace(" ", "-")}"' if c == "verdict" else ""
            cells.append(f"<td{cls}>{html.escape(row[c])}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="verdict-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _html_rows(rows: Sequence[Mapping[str, str]]) -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(rows: Sequence[Mapping[str, str]], cols: Sequence[str]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(r[c]).replace("|", "\\|").replace("\n", " ") for c in cols) + " |")
    return "\n".join(out)


def render_markdown(run: RunDir, verdicts: Sequence[Verdict], figures: Mapping[str, Sequence[str]],
                    captions: Mapping[str, tuple[str, str]], *, relative_to: str) -> str:
    parts = [f"# {_title(run)}", "", _lede(run), "", "## Verdicts", "", summary_paragraph(verdicts), ""]
    rows = table_rows(verdicts)
    parts.append(_md_table(rows, TABLE_COLUMNS) if rows else "No verdicts: no points finished.")
    parts += ["", '"model" and "stops tolerating at" come from the analytic model alone (model-only).', ""]
    faults = _fault_rows(run)
    if faults:
        parts += ["## Faults", "", _FAULTS_LEDE, "", _md_table(faults, list(faults[0])), ""]
    parts += ["## Evidence", ""]
    for name, paths in figures.items():
        png = next((p for p in paths if p.endswith(".png")), None)
        if png is None:
            continue
        title, caption = captions.get(name, (name, ""))
        parts += [f"![{title}]({os.path.relpath(png, relative_to)})", "", f"*{title}.* {caption}", ""]
    points = _points_rows(run)
    parts += ["### Points", "", _md_table(points, list(points[0])) if points else "none", "",
              "## Configuration", "", "```json", json.dumps(_config(run), indent=2, sort_keys=True, default=str),
              "```", ""]
    return "\n".join(parts)
