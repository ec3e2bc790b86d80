"""CLI: ``corridor bench link``, how faithfully the userspace delay line reproduces a link.

Prints, from one run: TCP throughput of a bare veth pair, TCP throughput
through the delay line at the configured rate and delay, their ratio, the RTT
error against 2 x delay, the jitter the delay line adds (p50/p99 of
|RTT - median|), and unless ``--quick``, a 1 % loss check over 50,000 UDP
packets and a saturated-queue check against Q / R.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import click

from corridor.cli.common import Duration, engine_option, fail, raise_interrupt, use_engine
from corridor.cli.jsonout import echo_json
from corridor.cli.table import fit_lines
from corridor.errors import CorridorError, NeedsRootError, UnitError
from corridor.spec.units import format_rate, parse_duration_ms, parse_rate_mbps


def register(cli: click.Group) -> None:
    bench = cli.commands.get("bench")
    if not isinstance(bench, click.Group):
        raise RuntimeError("the 'bench' group must exist before bench_link registers")
    bench.add_command(link)


def _policy_words(result: dict[str, Any]) -> str:
    """Whether the line's governor moved it off SCHED_FIFO during the flow (corridor.links.delayline)."""
    switches = result.get("delayline_policy_switches")
    if switches is None:
        return ""
    if switches == 0:
        return "; the line kept its scheduling policy"
    from corridor.links.delayline import BUSY_NICE, FIFO_LEAVE_SHARE

    times = "once" if switches == 1 else f"{switches} times"
    return (f"; the line changed its scheduling policy {times}: it needed "
            f"more than {FIFO_LEAVE_SHARE * 100:.0f} % of a core and ran as a normal task at nice {BUSY_NICE}, "
            "which others on its CPU can delay")


def report_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable lines for one benchmark result (as returned by ``BenchResult.as_dict``)."""
    rate = result["rate_mbps"]
    lines = [
        f"link: {format_rate(rate)}, {result['delay_ms']:g} ms one way, {result['duration_s']:g} s per flow, "
        f"TCP {result.get('congestion', 'system default')}, {result.get('engine', 'auto')} delay line",
        f"bare veth TCP         {result['bare_mbps']:10.1f} Mbit/s",
        f"delay line TCP        {result['shaped_mbps']:10.1f} Mbit/s  "
        f"({result['shaped_of_configured'] * 100:.1f} % of configured; TCP payload is at most 96.5 % of IP bytes)",
        f"ratio line/bare       {result['ratio']:10.3f}",
        f"RTT median            {result['rtt_median_ms']:10.2f} ms  (configured {result['rtt_configured_ms']:g} ms, "
        f"error {result['rtt_error_pct']:+.2f} %)",
        f"added jitter p50/p99  {result['jitter_p50_ms']:10.2f} / {result['jitter_p99_ms']:.2f} ms  "
        f"(bare veth {result.get('bare_jitter_p50_ms', float('nan')):.2f} / "
        f"{result.get('bare_jitter_p99_ms', float('nan')):.2f} ms)",
        f"departure lateness    {result['delayline_late_us_p99']:10.0f} us p99 (delay line's own clock)",
    ]
    if result.get("steering"):
        lines.append(f"steering              {result['steering']} (CORRIDOR_LINK_STEERING)")
    if "steal_fraction" in result:
        lines.append(
            f"CPU steal             {result['steal_fraction'] * 100:10.1f} %  (worst CPU "
            f"{result['steal_fraction_max_cpu'] * 100:.1f} %, during the delay line's flow: time the hypervisor "
            "gave other guests, which no process here can use; lateness includes it)"
        )
    if "machine_busy_fraction" in result:
        lines.append(f"machine busy          {result['machine_busy_fraction'] * 100:10.1f} %  (of "
                     f"{result['machine_cpus']:.0f} CPUs, during the delay line's flow){_policy_words(result)}")
    if "loss_measured" in result:
        lines.append(
            f"loss                  {result['loss_measured'] * 100:10.3f} %  (configured "
            f"{result['loss_configured'] * 100:g} %, {result['loss_packets']} UDP packets)"
        )
    if "queue_delay_measured_ms" in result:
        lines.append(
            f"queueing delay max    {result['queue_delay_measured_ms']:10.2f} ms  (Q/R "
            f"{result['queue_delay_expected_ms']:.2f} ms for {result['queue_bytes']} B at "
            f"{format_rate(result['queue_rate_mbps'])}, error {result['queue_delay_error_pct']:+.1f} %)"
        )
    return lines





@click.command()
@click.option("--rate", default="2Gbit", show_default=True, help="Configured link rate, e.g. 500Mbit.")
@click.option("--delay", default="25ms", show_default=True, help="Configured one-way delay.")
@click.option("--duration", "duration_s", default="10s", show_default=True, type=Duration(min_s=1.0),
              help="Each TCP flow, e.g. 10s (at least 1s).")
@click.option("--cc", default="cubic", show_default=True,
              help="TCP congestion control of the flows ('default' for the system's); BBR's ProbeRTT costs "
              "2-3 % of rate in any 10 s window.")
@click.option("--quick", is_flag=True, help="Skip the loss and queue checks.")
@engine_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def link(rate: str, delay: str, duration_s: float, cc: str, quick: bool, engine: str, as_json: bool) -> None:
    """Bare veth against the userspace delay line: throughput, RTT, jitter, loss, queue (needs root)."""
    from corridor.tools import linkbench
    try:
        rate_mbps = parse_rate_mbps(rate)
        delay_ms = parse_duration_ms(delay)
    except UnitError as exc:
        raise click.BadParameter(str(exc)) from exc
    if rate_mbps <= 0 or delay_ms < 0:
        raise click.BadParameter("rate must be positive and delay not negative")
    if os.geteuid() != 0:
        fail("corridor bench link builds network namespaces and needs root; run it with sudo.", code=3)
    engine_name = use_engine(engine)
    from corridor.cli.progress import ProgressLine

    bar = ProgressLine()
    progress = None if as_json else (lambda msg: bar.event(f"... {msg}", message=msg))
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        with bar:
            result = linkbench.run_bench(
                rate_mbps, delay_ms, duration_s, checks=not quick, progress=progress,
                congestion=None if cc == "default" else cc,
            )
    except KeyboardInterrupt:
        fail("interrupted; namespaces and processes were removed", code=130)
    except NeedsRootError as exc:
        fail(str(exc), code=exc.exit_code)
    except CorridorError as exc:
        fail(str(exc), code=exc.exit_code)
    finally:
        signal.signal(signal.SIGTERM, previous)
    data = {**result.as_dict(), "engine": engine_name}
    if as_json:
        echo_json(dict(sorted(data.items())))
    else:
        for line in fit_lines(report_lines(data), hang=22):
            click.echo(line)
