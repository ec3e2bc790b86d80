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

import click

from corridor.cli.common import fail
from corridor.errors import CorridorError
from corridor.traces import ReplayWindow, detect_format, read_requests
from corridor.units import format_bytes


def _pct(values: list[int], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return float(s[min(int(round((len(s) - 1) * q)), len(s) - 1)])


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
    @click.option("--start", "start_s", type=float, default=0.0, show_default=True,
                  help="Skip this many seconds from the first record.")
    @click.option("--window", "window_s", type=float, default=None, help="Keep this many seconds after --start.")
    @click.option("--speed", type=float, default=1.0, show_default=True, help="Replay speed factor.")
    @click.option("--cap", type=int, default=None, help="Stop after this many records.")
    def info(path: Path, fmt: str | None, start_s: float, window_s: float | None, speed: float,
             cap: int | None) -> None:
        """Summarise a trace or capture: records, time span, rate, sizes."""
        try:
            fmt = fmt or detect_format(path)
            window = _window(start_s, window_s, speed, cap)
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
                click.echo(f"{path}: {fmt} request trace")
                click.echo(f"  requests      {n}")
                click.echo(f"  span          {last:.3f} s (after speed x{speed:g})")
                click.echo(f"  mean rate     {n / last:.2f} req/s" if last > 0 else "  mean rate     -")
                for name, vals in (("prompt tokens", prompts), ("output tokens", outputs)):
                    mean = sum(vals) / len(vals) if vals else math.nan
                    click.echo(f"  {name:13} mean {mean:.0f}  p50 {_pct(vals, 0.5):.0f}  p90 {_pct(vals, 0.9):.0f}"
                               f"  p99 {_pct(vals, 0.99):.0f}  max {max(vals) if vals else 0}")
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
                click.echo(f"{path}: generic message trace")
                click.echo(f"  messages      {n}")
                click.echo(f"  bytes         {total} ({format_bytes(total)})")
                click.echo(f"  span          {last:.6f} s")
                click.echo(f"  directions    {len(pairs)}")
                click.echo("  kinds         " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
            else:
                from corridor.traces.pcap import convert

                messages, flows = convert(path)
                total = sum(m.size_bytes for m in messages)
                click.echo(f"{path}: packet capture")
                click.echo(f"  flows         {len(flows)} ({sum(f.proto == 'tcp' for f in flows)} TCP)")
                click.echo(f"  packets       {sum(f.packets for f in flows)}")
                click.echo(f"  messages      {len(messages)}")
                click.echo(f"  bytes         {total} ({format_bytes(total)}) of payload")
                click.echo(f"  span          {messages[-1].time_s if messages else 0.0:.6f} s")
                retx = sum(f.retransmitted_bytes for f in flows)
                missing = sum(f.missing_bytes for f in flows)
                click.echo(f"  retransmitted {retx} bytes (not counted); missing {missing} bytes")
        except CorridorError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{path}: {exc.strerror or exc}")

    @trace.command("convert")
    @click.argument("pcap", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
                  help="Generic message trace (JSON lines) to write.")
    @click.option("--gap", "gap_ms", type=float, default=2.0, show_default=True,
                  help="Silence (ms) that ends a non-HTTP TCP message.")
    def convert_cmd(pcap: Path, out: Path, gap_ms: float) -> None:
        """Convert a pcap/pcapng capture to a generic message trace."""
        from corridor.traces.pcap import convert_to_file

        try:
            count, total = convert_to_file(pcap, out, gap_s=gap_ms / 1e3)
        except CorridorError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{out}: {exc.strerror or exc}")
        click.echo(f"wrote {count} messages, {total} bytes to {out}")
