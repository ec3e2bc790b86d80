"""CLI: ``corridor bench links`` (N busy links on one machine) and ``corridor bench cost`` (the rest of a run).

``links`` loads N userspace links at once, a TCP flow each way on each, for
each N of ``--links`` (1,2,4,8 by default), and prints per link and in
aggregate the carried rate against the configured one, RTT under load against
idle, departure lateness p50/p99, the delay lines' CPU per Gbit/s and the
whole machine's CPU over the flows' steady state, then the largest N at which
every link held (each direction at least 95 % of its rate, lateness p99 at
most 1 ms).

``cost`` builds and tears down networks of 10, 50 and 100 hosts (``--hosts``),
starts an agent on every host of each, and times the runner's own work per
point without a network; it says whether build plus teardown grows at most
linearly with the host count.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import click

from corridor.cli.common import Duration, engine_option, fail, raise_interrupt, use_engine
from corridor.cli.jsonout import echo_json
from corridor.errors import CorridorError
from corridor.spec.units import format_rate, parse_duration_ms, parse_rate_mbps


def register(cli: click.Group) -> None:
    bench = cli.commands.get("bench")
    if not isinstance(bench, click.Group):
        raise RuntimeError("the 'bench' group must exist before bench_links registers")
    bench.add_command(links)
    bench.add_command(cost)


def parse_counts(text: str, *, lowest: int = 1, highest: int = 64, what: str = "link counts") -> list[int]:
    """``"1,2,4,8"`` -> [1, 2, 4, 8]: distinct whole numbers from ``lowest`` to ``highest``, in order."""
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise click.BadParameter(f"{what} are whole numbers separated by commas, got {text!r}") from None
    if not counts or counts[0] < lowest or counts[-1] > highest:
        raise click.BadParameter(f"{what} lie between {lowest} and {highest}, got {text!r}")
    return counts


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


#: A machine busy at least this share of its CPUs' time over the loaded window had no CPU to spare.
MACHINE_SATURATED = 0.95


def _why_not(lk: dict[str, Any], load_avg: float, saturated: bool = False) -> list[str]:
    """For a link that did not hold, a line per failing direction with its cause in the line's own counters: late
    departures (the line's timing), drops at its full queue (TCP's recovery from them cost the rate), or neither
    (the line kept time and dropped nothing: the flow's ends did not send more, as when CPUs are short).

    On a ``saturated`` machine (no idle CPU over the window) the shortfall is not put on the drops alone: the
    line says the machine had none to spare, and the machine's line below gives the figures."""
    from corridor.links import capacity

    out = []
    for name, label in (("a_to_b", "a->b"), ("b_to_a", "b->a")):
        d = lk[name]
        carried = lk[f"carried_{name}"]
        late = d.get("late_p99_us")
        if late is None:
            out.append(f"    {label}: no departures counted, nothing carried")
            continue
        if late > capacity.HOLD_LATE_P99_US:
            out.append(f"    {label}: departures late (p99 {_us(late)} us, above {capacity.HOLD_LATE_P99_US:.0f} us)")
            continue
        if carried >= capacity.HOLD_CARRIED_FRACTION:
            continue
        drops = d.get("drops_queue")
        head = f"    {label}: {carried * 100:.1f} % carried, on time (p99 {_us(late)} us); "
        if drops is None:
            out.append(head + "the line's queue counters did not say whether it dropped")
        elif drops > 0 and saturated:
            out.append(head + f"the line dropped {drops} packet{'s' if drops != 1 else ''} at its full queue, "
                       "on a machine with no idle CPU (below)")
        elif drops > 0:
            out.append(head + f"the line dropped {drops} packet{'s' if drops != 1 else ''} at its full queue, "
                       "and TCP's recovery from the loss cost the rate")
        elif saturated:
            out.append(head + "the line dropped nothing: the flow's ends sent no more, on a machine with no idle "
                       "CPU (below)")
        else:
            out.append(head + f"the line dropped nothing: the flow's ends sent no more (load average {load_avg:.1f})")
    return out


def links_report_lines(result: dict[str, Any]) -> list[str]:
    """Lines for one N (``LinksResult.as_dict()``): a row per link, then the aggregate."""
    agg = result["aggregate"]
    from corridor.links.fidelity import steal_words

    steal = steal_words(agg)
    lines = [f"{agg['links']} link(s) loaded at once (load average {agg['load_avg_1m']:.1f}"
             f"{'; ' + steal + ' while loaded' if steal else ''}):",
             "  link     a->b %  b->a %  idle RTT  loaded RTT  queueing  late p50/p99 a->b   late p50/p99 b->a"
             "  CPU   CPU s/Gbit  holds"]
    if result.get("steering"):
        lines.insert(1, f"  steering: {result['steering']} (CORRIDOR_LINK_STEERING)")
    for lk in result["links"]:
        a, b = lk["a_to_b"], lk["b_to_a"]
        loaded = "-" if lk["loaded_rtt_ms"] is None else f"{lk['loaded_rtt_ms']:.2f}"
        queueing = "-" if lk["queueing_ms"] is None else f"{lk['queueing_ms']:.2f}"
        lines.append(
            f"  {lk['link']:<7} {lk['carried_a_to_b'] * 100:6.1f}  {lk['carried_b_to_a'] * 100:6.1f}  "
            f"{lk['idle_rtt_ms']:8.2f}  {loaded:>10}  {queueing:>8}  "
            f"{_us(a['late_p50_us']):>7} / {_us(a['late_p99_us']):<7} us  {_us(b['late_p50_us']):>7} / "
            f"{_us(b['late_p99_us']):<7} us  {lk['cpu_fraction'] * 100:3.0f}%  {lk['cpu_per_gbps']:10.3f}  "
            f"{'yes' if lk['holds'] else 'NO'}"
        )
        if not lk["holds"]:
            lines.extend(_why_not(lk, float(agg.get("load_avg_1m") or 0.0),
                                  saturated=agg.get("machine_busy_fraction", 0.0) >= MACHINE_SATURATED))
    late = agg["late_p99_us_max"]
    lines.append(
        f"  all      carried {agg['carried_of_configured'] * 100:.1f} % of {agg['links'] * 2} directions' rates "
        f"(worst {agg['carried_min_of_configured'] * 100:.1f} %), {agg['goodput_mbps']:.0f} Mbit/s goodput, "
        f"late p99 worst {_us(late)} us, queueing worst {agg['queueing_ms_max']:.2f} ms, "
        f"CPU {agg['cpu_cores']:.2f} cores, {agg['cpu_s_per_gbit']:.3f} CPU s/Gbit: "
        f"{'holds' if agg['holds'] else 'does NOT hold'}"
    )
    lines.extend(_machine_lines(agg))
    return lines


def _machine_lines(agg: dict[str, Any]) -> list[str]:
    """The whole machine's CPU over the flows' steady state, and when links fell short on a machine with none idle,
    the CPUs every direction's full rate would take at the measured cost per Gbit/s (lines and flows' ends)."""
    if "machine_busy_fraction" not in agg:
        return []
    busy = agg["machine_busy_fraction"]
    lines = [f"  machine  busy {busy * 100:.0f} % of {agg['machine_cpus']:.0f} CPUs in the flows' steady state: "
             f"the lines {agg['steady_lines_cores']:.2f} cores, the flows' ends and the kernel's work for them "
             f"{agg['other_cores_busy']:.2f}; {agg['machine_cpu_s_per_gbit']:.3f} CPU s/Gbit in all"]
    if not agg["holds"] and busy >= MACHINE_SATURATED:
        lines.append(f"  the machine had no idle CPU while loaded, so lines and flows' ends were short of it alike: "
                     f"at {agg['machine_cpu_s_per_gbit']:.3f} CPU s/Gbit, every direction at its full rate would "
                     f"take about {agg['cpus_for_full_rate']:.1f} CPUs")
    return lines





@click.command()
@click.option("--links", "counts_text", default="1,2,4,8", show_default=True,
              help="Numbers of links to load at once, one run each.")
@click.option("--rate", default="1Gbit", show_default=True, help="Configured rate of every link, each direction.")
@click.option("--delay", default="25ms", show_default=True, help="Configured one-way delay of every link.")
@click.option("--duration", default="10s", show_default=True, type=Duration(min_s=3.0),
              help="Length of each TCP flow, e.g. 10s (its first 2 s of slow start are left out).")
@click.option("--cc", "congestion", default="cubic", show_default=True,
              help="TCP congestion control of the flows ('default' for the system's).")
@engine_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the tables.")
def links(counts_text: str, rate: str, delay: str, duration: float, congestion: str, engine: str,
          as_json: bool) -> None:
    """N userspace links loaded at once: carried rate, RTT, lateness and CPU per link, and the machine's CPU (root)."""
    from corridor.links import capacity

    counts = parse_counts(counts_text)
    try:
        rate_mbps = parse_rate_mbps(rate)
        delay_ms = parse_duration_ms(delay)
    except CorridorError as exc:
        raise click.BadParameter(str(exc)) from exc
    if rate_mbps <= 0 or delay_ms < 0:
        raise click.BadParameter("rate must be positive and delay not negative")
    if os.geteuid() != 0:
        fail("corridor bench links builds network namespaces and needs root; run it with sudo.", code=3)
    engine_name = use_engine(engine)
    if not as_json:
        click.echo(f"delay line: {engine_name}")
    progress = None if as_json else (lambda msg: click.echo(f"... {msg}", err=True))
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    results = []
    try:
        for count in counts:
            result = capacity.measure_links(count, rate_mbps=rate_mbps, delay_ms=delay_ms, duration_s=duration,
                                            congestion=None if congestion == "default" else congestion,
                                            progress=progress)
            results.append(result)
            if not as_json:
                for line in links_report_lines(result.as_dict()):
                    click.echo(line)
    except KeyboardInterrupt:
        fail("interrupted; namespaces and processes were removed", code=130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    best = capacity.largest_holding(results)
    if as_json:
        echo_json({"rate_mbps": rate_mbps, "delay_ms": delay_ms, "engine": engine_name,
                   "runs": [r.as_dict() for r in results],
                   "largest_holding": best})
        return
    held = "none" if best is None else str(best)
    click.echo(f"largest N that holds (every direction >= {capacity.HOLD_CARRIED_FRACTION * 100:.0f} % of "
               f"{format_rate(rate_mbps)}, lateness p99 <= {capacity.HOLD_LATE_P99_US:.0f} us): {held}")


def cost_report_lines(builds: list[dict[str, Any]], linear: bool, exponents: list[float],
                      runner: dict[str, Any] | None) -> list[str]:
    """Lines for ``corridor bench cost``: one row per network size, the growth verdict, the runner's cost."""
    lines = ["  hosts  nodes   build s  teardown s  total s  per host s  agent ready median/max s  agents wall s"]
    for b in builds:
        lines.append(
            f"  {b['hosts']:5d}  {b['nodes']:5d}  {b['build_s']:8.2f}  {b['teardown_s']:10.2f}  {b['total_s']:7.2f}  "
            f"{b['per_host_s']:10.3f}  {b['agent_ready_median_s']:11.3f} / {b['agent_ready_max_s']:<8.3f}  "
            f"{b['agents_wall_s']:13.2f}"
        )
    if builds:
        steps = ", ".join(f"{a['hosts']}->{b['hosts']}: hosts^{e:.2f}"
                          for a, b, e in zip(builds, builds[1:], exponents, strict=False))
        lines.append(f"build + teardown {'grows at most linearly' if linear else 'grows FASTER than linearly'} "
                     f"with the host count" + (f" ({steps})" if steps else ""))
    if runner is not None:
        lines.append(f"runner overhead: {runner['per_point_s'] * 1e3:.1f} ms per point ({runner['points']} points of "
                     f"a null workload without a network in {runner['wall_s']:.2f} s)")
    return lines


@click.command()
@click.option("--hosts", "hosts_text", default="10,50,100", show_default=True,
              help="Host counts of the networks to build, one each ('' for none).")
@click.option("--runner-points/--no-runner-points", default=True, show_default=True,
              help="Also time the runner's own work per point (no network, no root).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def cost(hosts_text: str, runner_points: bool, as_json: bool) -> None:
    """The rest of a run: network build and teardown by host count, agent start-up, runner overhead (root)."""
    from corridor.workloads import runcost, runnercost
    counts = parse_counts(hosts_text, lowest=2, highest=250, what="host counts") if hosts_text.strip() else []
    if counts and os.geteuid() != 0:
        fail("corridor bench cost builds networks and needs root; run it with sudo (or --hosts '').", code=3)
    progress = None if as_json else (lambda msg: click.echo(f"... {msg}", err=True))
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        builds = [runcost.measure_build(count, progress=progress) for count in counts]
        runner = runnercost.measure_runner() if runner_points else None
    except KeyboardInterrupt:
        fail("interrupted; the network was torn down", code=130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    linear, exponents = runcost.growth(builds)
    build_rows = [b.as_dict() for b in builds]
    runner_row = None if runner is None else runner.as_dict()
    if as_json:
        echo_json({"builds": build_rows, "linear": linear, "exponents": exponents, "runner": runner_row})
        return
    for line in cost_report_lines(build_rows, linear, exponents, runner_row):
        click.echo(line)
