"""``corridor trace``: inspect request and message traces; convert packet captures.

Stage: CLI (prints). ``trace info FILE`` streams a trace (Azure CSV, Mooncake
JSONL, generic message JSONL or a pcap) and prints its size, span, rates and
token statistics; ``trace convert PCAP -o TRACE.jsonl`` writes the capture's
messages as a generic message trace. A malformed file is one line naming the
file and line, exit status 2.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from corridor import stats
from corridor.cli.common import Duration, fail, out_option
from corridor.cli.jsonout import echo_json
from corridor.cli.table import fit_lines
from corridor.errors import CorridorError
from corridor.spec.units import format_bytes
from corridor.traces import ReplayWindow, detect_format, read_requests


def _pct(values: list[int], q: float) -> float:
    """The q-quantile (0-1) of token counts, by the project's one percentile definition."""
    return stats.percentile(values, q * 100.0)


def _window(start_s: float, window_s: float | None, speed: float, cap: int | None) -> ReplayWindow:
    return ReplayWindow(start_s=start_s, window_s=window_s, speed=speed, cap=cap)


def register(cli: click.Group) -> None:
    @cli.group()
    def trace() -> None:
        """Request traces (Azure, Mooncake), message traces and packet captures."""

    @trace.command("info")
    @click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--format", "fmt", type=click.Choice(["azure", "mooncake", "generic", "pcap"]), default=None,
                  help="Trace format (default: detected from the first line).")
    @click.option("--start", "start_s", type=Duration(), default="0s", show_default=True,
                  help="Skip this long from the first record, e.g. 30s or 5min.")
    @click.option("--window", "window_s", type=Duration(), default=None,
                  help="Keep this long after --start, e.g. 10min.")
    @click.option("--speed", type=float, default=1.0, show_default=True, help="Replay speed factor.")
    @click.option("--cap", type=int, default=None, help="Stop after this many records.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    def info(path: Path, fmt: str | None, start_s: float, window_s: float | None, speed: float,
             cap: int | None, as_json: bool) -> None:
        """Summarise a trace or capture: records, time span, rate, sizes."""
        try:
            summary, lines = _summarise(path, fmt, _window(start_s, window_s, speed, cap), speed)
        except CorridorError as exc:
            fail(str(exc), code=exc.exit_code)
        except OSError as exc:
            fail(f"{path}: {exc.strerror or exc}")
        if as_json:
            echo_json(summary)
            return
        for line in fit_lines(lines, hang=14):
            click.echo(line)

    def _summarise(path: Path, fmt: str | None, window: Any, speed: float) -> tuple[dict[str, Any], list[str]]:
        fmt = fmt or detect_format(path)
        summary: dict[str, Any] = {"path": str(path), "format": fmt}
        lines: list[str] = []
        if fmt in ("azure", "mooncake"):
            n = 0
            last = 0.0
            prompts: list[int] = []
            outputs: list[int] = []
            for req in read_requests(path, fmt, window):
                n += 1
                last = req.t_s
                prompts.append(req.prompt_tokens)
                outputs.append(req.output_tokens)
            summary.update(requests=n, span_s=last, speed=speed, rate_rps=n / last if last > 0 else None)
            lines += [f"{path}: {fmt} request trace", f"  requests      {n}",
                      f"  span          {last:.3f} s (after speed x{speed:g})",
                      f"  mean rate     {n / last:.2f} req/s" if last > 0 else "  mean rate     -"]
            for name, vals in (("prompt tokens", prompts), ("output tokens", outputs)):
                mean = sum(vals) / len(vals) if vals else math.nan
                stats = {"mean": mean if vals else None, "p50": _pct(vals, 0.5), "p90": _pct(vals, 0.9),
                         "p99": _pct(vals, 0.99), "max": max(vals) if vals else 0}
                summary[name.replace(" ", "_")] = stats
                lines.append(f"  {name:13} mean {mean:.0f}  p50 {stats['p50']:.0f}  p90 {stats['p90']:.0f}"
                             f"  p99 {stats['p99']:.0f}  max {stats['max']}")
        elif fmt == "generic":
            from corridor.traces import generic

            n = total = 0
            last = 0.0
            pairs: set[tuple[str, str]] = set()
            kinds: dict[str, int] = {}
            for m in generic.read(path, window):
                n += 1
                total += m.size_bytes
                last = m.time_s
                pairs.add((m.src, m.dst))
                kinds[m.kind] = kinds.get(m.kind, 0) + 1
            summary.update(messages=n, bytes=total, span_s=last, directions=len(pairs), kinds=kinds)
            lines += [f"{path}: generic message trace", f"  messages      {n}",
                      f"  bytes         {total} ({format_bytes(total)})", f"  span          {last:.6f} s",
                      f"  directions    {len(pairs)}",
                      "  kinds         " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))]
        else:
            from corridor.traces.pcap import convert

            messages, flows = convert(path)
            total = sum(m.size_bytes for m in messages)
            retx = sum(f.retransmitted_bytes for f in flows)
            missing = sum(f.missing_bytes for f in flows)
            span = messages[-1].time_s if messages else 0.0
            summary.update(flows=len(flows), tcp_flows=sum(f.proto == "tcp" for f in flows),
                           packets=sum(f.packets for f in flows), messages=len(messages), payload_bytes=total,
                           span_s=span, retransmitted_bytes=retx, missing_bytes=missing)
            lines += [f"{path}: packet capture",
                      f"  flows         {len(flows)} ({summary['tcp_flows']} TCP)",
                      f"  packets       {summary['packets']}", f"  messages      {len(messages)}",
                      f"  bytes         {total} ({format_bytes(total)}) of payload", f"  span          {span:.6f} s",
                      f"  retransmitted {retx} bytes (not counted); missing {missing} bytes"]
        return summary, lines

    @trace.command("convert")
    @click.argument("pcap", type=click.Path(dir_okay=False, path_type=Path))
    @out_option(type=click.Path(dir_okay=False, path_type=Path), required=True,
                help="Generic message trace (JSON lines) to write.")
    @click.option("--gap", "gap_s", type=Duration(), default="2ms", show_default=True,
                  help="Silence that ends a non-HTTP TCP message, e.g. 2ms.")
    def convert_cmd(pcap: Path, out: Path, gap_s: float) -> None:
        """Convert a pcap/pcapng capture to a generic message trace."""
        from corridor.traces.pcap import convert_file

        try:
            stats = convert_file(pcap, out, gap_s=gap_s)
        except CorridorError as exc:
            fail(str(exc), code=exc.exit_code)
        except OSError as exc:
            fail(f"{out}: {exc.strerror or exc}")
        click.echo(f"wrote {stats.messages} messages, {stats.payload_bytes} bytes to {out}")
        click.echo(f"read {stats.packets} packets in {stats.elapsed_s:.2f} s ({stats.packets_per_s:,.0f} packets/s)")
