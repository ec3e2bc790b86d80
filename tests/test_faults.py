"""Unit tests of link faults: schedule parsing, compiling, the delay line's control, tc argv and the RTO model."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest

from corridor.analytic.faults import (
    idle_retries_s,
    idle_sender_stall,
    linux_rto_s,
    outage_stall,
    predict_fault,
    syn_retries_s,
)
from corridor.errors import EmulationError, SpecError
from corridor.links import delayline as dl
from corridor.links import netem
from corridor.links.contract import LinkDirection
from corridor.links.userspace import command_lines
from corridor.spec.faults import fault_impacts, fault_records, fault_rows, link_changes, parse_faults


def test_parse_and_compile_a_schedule() -> None:
    events = parse_faults([{"at": "5s", "event": "protection-switch", "delay": "30ms", "hold": "1s"},
                           {"link": "a-b", "at": "10s", "event": "cut", "duration": "2s"}], path="f.yaml")
    assert events[0].duration_s == pytest.approx(0.05) and events[0].end_s == pytest.approx(6.05)
    changes = link_changes(events, ["a-b", "c-d"])
    steps = [(c.step, round(c.at_s, 3), c.state()) for c in changes["a-b"]]
    assert steps == [("start", 5.0, {"down": True}), ("reroute", 5.05, {"delay_ms": 30.0}), ("end", 6.05, {}),
                     ("start", 10.0, {"down": True}), ("end", 12.0, {})]
    assert [c.step for c in changes["c-d"]] == ["start", "reroute", "end"]
    scaled = link_changes(events[:1], ["a-b"], time_scale=2.0)["a-b"]
    assert scaled[1].at_s == pytest.approx(10.1) and scaled[1].delay_ms == pytest.approx(60.0)


@pytest.mark.parametrize(("item", "key"), [
    ({"at": "1s", "event": "melt", "duration": "1s"}, "faults[0].event"),
    ({"event": "cut", "duration": "1s"}, "faults[0].at"),
    ({"at": "1s", "event": "cut"}, "faults[0].duration"),
    ({"at": "1", "event": "cut", "duration": "1s"}, "faults[0].at"),
    ({"at": "1s", "event": "cut", "duration": "1s", "rate": "1Gbit"}, "faults[0].rate"),
    ({"at": "1s", "event": "delay", "duration": "1s"}, "faults[0]"),
    ({"at": "1s", "event": "rate", "duration": "1s", "rate": "10mbps"}, "faults[0].rate"),
    ({"at": "1s", "event": "loss", "duration": "1s", "loss": "150%"}, "faults[0].loss"),
    ({"at": "1s", "event": "cut", "duration": "1s", "colour": 1}, "faults[0].colour"),
])
def test_bad_events_name_file_and_key(item: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_faults([item], path="f.yaml")
    assert str(err.value).startswith(f"f.yaml: {key}:")


def test_overlapping_events_and_unknown_links_are_refused() -> None:
    with pytest.raises(SpecError, match=r"faults\[1\].*overlaps faults\[0\].*give it a hold"):
        parse_faults([{"at": "1s", "event": "protection-switch", "delay": "30ms"},
                      {"at": "9s", "event": "cut", "duration": "1s"}], path="f.yaml")
    with pytest.raises(SpecError, match="no WAN link 'x-y'"):
        link_changes(parse_faults([{"link": "x-y", "at": "1s", "event": "cut", "duration": "1s"}], path="f"), ["a-b"])


def _config() -> dl.DirectionConfig:
    return dl.DirectionConfig(rate_bps=1e9, delay_s=0.025, queue_bytes=1_000_000)


def test_delay_line_applies_commands_at_their_due_time() -> None:
    queue = dl.CommandQueue()
    for line in command_lines([(2.0, {"down": True}), (1.0, {"delay_ms": 30.0}), (3.0, {})]):
        queue.push(dl.parse_command(line))
    assert queue.next_due() == 1.0 and queue.due(0.999) == []
    assert [c.state for c in queue.due(2.0)] == [{"delay_ms": 30.0}, {"down": True}]
    shaper = dl.Shaper(_config(), random.Random(1))
    config, down = dl.apply_state(_config(), {"down": True})
    shaper.reconfigure(config, down=down)
    assert shaper.offer(0.0, (1500, 1500)) == [None, None] and shaper.drops_down == 2
    config, down = dl.apply_state(_config(), {"delay_ms": 30.0, "rate_mbps": 100.0, "loss": 0.5})
    assert (config.delay_s, config.rate_bps, config.loss, down) == (0.030, 1e8, 0.5, False)
    config, down = dl.apply_state(_config(), {})
    shaper.reconfigure(config, down=down)
    assert shaper.release_times(1.0, [1500])[0] == pytest.approx(1.0 + 12e-6 + 0.025)


@pytest.mark.parametrize("line", [b"not json", b'{"op": "boom"}', b'{"at_monotonic_s": -1}',
                                  b'{"direction": "up"}', b'{"state": []}', b'{"id": "x"}'])
def test_bad_control_lines_are_refused(line: bytes) -> None:
    with pytest.raises(dl.BadCommand):
        dl.parse_command(line)


@pytest.mark.parametrize("state", [{"rate_mbps": 0}, {"loss": 1.0}, {"down": "yes"}, {"jitter": 1}])
def test_bad_states_are_refused(state: dict[str, Any]) -> None:
    with pytest.raises(dl.BadCommand):
        dl.apply_state(_config(), state)


def test_netem_change_argv() -> None:
    base = LinkDirection(rate_mbps=1000, delay_ms=25, queue_bytes=6_250_000)
    direction, down = netem.faulted_direction(base, {"down": True, "extra_delay_ms": 5.0})
    tbf, qdisc = netem.change_argv("w-eth1", direction, down=down)
    assert tbf[:9] == ["tc", "qdisc", "change", "dev", "w-eth1", "root", "handle", "1:", "stab"]
    assert qdisc[:10] == ["tc", "qdisc", "change", "dev", "w-eth1", "parent", "1:1", "handle", "10:", "netem"]
    assert qdisc[qdisc.index("delay") + 1] == "30000us" and qdisc[-3:] == ["loss", "random", "100%"]
    slow, _ = netem.faulted_direction(base, {"rate_mbps": 400.0})
    tbf_slow = netem.change_argv("w-eth1", slow)[0]
    assert tbf_slow[tbf_slow.index("rate") + 1] == "400000000bit"
    assert "loss" not in netem.change_argv("w-eth1", base)[1]
    with pytest.raises(EmulationError):
        netem.faulted_direction(base, {"colour": 1})


def test_rto_model() -> None:
    assert linux_rto_s(0.050) == pytest.approx(0.250)
    assert linux_rto_s(0.050, 0.080) == pytest.approx(0.370)
    cut = outage_stall(2.0, 0.050)
    assert cut.via == "rto" and cut.retransmissions_s == pytest.approx((0.225, 0.725, 1.725, 3.725))
    assert cut.stall_s == pytest.approx(3.725)
    switch = predict_fault("protection-switch", outage_s=0.05, rtt_ms=50, new_rtt_ms=60)
    assert switch.via == "probe" and switch.stall_s == pytest.approx(0.125 + 0.09 - 0.025)
    assert switch.extra_rtt_s == pytest.approx(0.010)
    assert outage_stall(0.01, 0.050).via == "in-flight"
    assert outage_stall(2.0, 0.050, last_send_s=0.5).retransmissions_s[0] == pytest.approx(0.6)
    assert predict_fault("rate", outage_s=0.0, rtt_ms=50).stall_s is None


def test_a_sender_with_nothing_outstanding_retries_on_its_own_schedule() -> None:
    # one segment out on a 50 ms path: the probe at the RTO (250 ms, sooner than 2 srtt + 200 ms), the timer
    # re-armed 250 ms later, then doubling; these are the times a request sent into a recorded 2 s cut came back
    assert idle_retries_s(0.050)[:6] == pytest.approx((0.25, 0.5, 1.0, 2.0, 4.0, 8.0))
    # a 200 ms srtt: the probe (2 x 200 + 200 = 600 ms) comes after the RTO (400 ms), so the RTO goes first
    assert idle_retries_s(0.200)[:3] == pytest.approx((0.4, 0.8, 1.6))
    # SYNs: four retries a second apart (tcp_syn_linear_timeouts), then doubling; older kernels double at once
    assert syn_retries_s()[:7] == pytest.approx((1, 2, 3, 4, 6, 10, 18))
    assert syn_retries_s(linear=0)[:3] == pytest.approx((1, 3, 7))
    # a 2 s cut: sent at its start, or anywhere in its first second, through 2.0 s after the send
    for sent, stall in ((0.0, 2.0), (0.6, 2.0), (1.04, 1.0), (1.6, 0.5), (1.9, 0.25), (2.1, 0.0)):
        assert idle_sender_stall(2.0, 0.050, sent_s=sent).stall_s == pytest.approx(stall), sent
    # a new connection sent 0.6 s in: its SYN goes again at 1.6 s (still down) and 2.6 s
    syn = idle_sender_stall(2.0, 0.050, sent_s=0.6, syn=True)
    assert syn.via == "syn" and syn.stall_s == pytest.approx(2.0) and syn.retransmissions_s == (1.0, 2.0)
    # after a protection switch to a longer path the retry arrives later by the added one way
    switch = idle_sender_stall(0.05, 0.050, new_rtt_s=0.060)
    assert switch.via == "probe" and switch.stall_s == pytest.approx(0.25 + 0.005)


def test_a_transmission_of_several_segments_is_probed_after_two_round_trips() -> None:
    # a request of two segments or a chunk: the probe 2 srtt + 2 ms after the send, then the RTO chain from it;
    # scripts/probe_cut_retries.py caught these on the wire at 0.105, 0.36, 0.88 and 1.90 s
    assert idle_retries_s(0.050, segments=2)[:5] == pytest.approx((0.102, 0.352, 0.852, 1.852, 3.852))
    # so a 2 s cut holds a request sent in its first 148 ms for one more back-off than a one-segment request
    assert idle_sender_stall(2.0, 0.050, sent_s=0.1, segments=2).stall_s == pytest.approx(3.852)
    assert idle_sender_stall(2.0, 0.050, sent_s=0.2, segments=2).stall_s == pytest.approx(1.852)
    assert idle_sender_stall(2.0, 0.050, sent_s=0.1).stall_s == pytest.approx(2.0)


def test_timer_slack_lets_a_retry_just_before_the_return_come_through_with_it() -> None:
    from corridor.analytic.faults import TIMER_SLACK, first_through_s

    retries = idle_retries_s(0.050, segments=2)
    # on time the retry 1.852 s after a send at 0.1 s goes into the cut; an eighth of 1.852 s late it would
    # come after the return, so with the slack the request comes through as the link returns
    assert first_through_s(0.1, 2.0, retries) == pytest.approx(3.952)
    assert first_through_s(0.1, 2.0, retries, slack=TIMER_SLACK) == pytest.approx(2.0)
    # a retry already after the return keeps its own time; one too early for any slack stays lost
    assert first_through_s(0.2, 2.0, retries, slack=TIMER_SLACK) == pytest.approx(2.052)
    assert first_through_s(0.5, 3.0, retries, slack=TIMER_SLACK) == pytest.approx(4.352)


class _Run:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records


def test_fault_impacts_of_a_step_straddling_a_cut() -> None:
    events = parse_faults([{"at": "1s", "event": "cut", "duration": "2s"}], path="f")
    changes = link_changes(events, ["a-b"])
    faults = fault_records(events, changes, 100.0, {"a-b": [{"applied_monotonic_s": 101.0001}, {}]},
                           {"a-b": {"delay_ms": 25.0, "rate_mbps": 1000.0}})
    assert faults[0]["late_ms_max"] == pytest.approx(0.1, abs=1e-6)
    steps = [{"kind": "train_step", "workload": "dp", "step": i, "rank": 0, "t_start_s": 99.0 + 0.5 * i,
              "step_time_s": 0.5} for i in range(4)]
    steps.append({"kind": "train_step", "workload": "dp", "step": 4, "rank": 0, "t_start_s": 100.9,
                  "step_time_s": 4.3})
    rows = fault_impacts(_Run([{**r, "point_id": "p"} for r in faults + steps]))
    assert len(rows) == 1 and rows[0]["step"] == 4
    assert rows[0]["measured_stall_s"] == pytest.approx(3.8)
    assert rows[0]["model_stall_s"] == pytest.approx(3.725)
    # the point's predicted WAN traffic decides which sender the cut meets: a link at least half busy carries a
    # window-limited flow (3.725 s); a step whose exchanges leave it mostly idle sends its next chunk into the cut,
    # retried 0.102, 0.352, 0.852, 1.852 and 3.852 s after it went out: on time, the fourth retry is still inside
    # the cut (3.852 s); a timer a little late carries it past the link's return (2.0 s)
    busy = {"kind": "prediction", "workload": "dp", "predicted.wan_bytes": 40_000_000, "model_step_time_s": 0.5}
    idle = {**busy, "predicted.wan_bytes": 10_000_000}
    for prediction, sender, stall, alt in ((busy, "bulk", 3.725, None), (idle, "idle", 3.852, 2.0)):
        [row] = fault_impacts(_Run([{**r, "point_id": "p"} for r in [*faults, *steps, prediction]]))
        assert row["model_sender"] == sender and row["model_stall_s"] == pytest.approx(stall)
        assert row.get("model_stall_alt_s") == (None if alt is None else pytest.approx(alt))
        assert row["model_link_share"] == pytest.approx(prediction["predicted.wan_bytes"] * 8 / 0.5 / 1e9)


def _switch_point(step_times: list[float], samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A 50 ms protection switch 1 s into a point whose steps last ``step_times`` (step 4 holds it)."""
    events = parse_faults([{"at": "1s", "event": "protection-switch", "duration": "50ms", "delay": "30ms",
                            "hold": "1s"}], path="f")
    changes = link_changes(events, ["a-b"])
    faults = fault_records(events, changes, 100.0, {"a-b": [{"applied_monotonic_s": 101.0}, {}, {}]},
                           {"a-b": {"delay_ms": 25.0, "rate_mbps": 1000.0}})
    steps, start = [], 100.9 - sum(step_times[:4])
    for i, length in enumerate(step_times):
        steps.append({"kind": "train_step", "workload": "dp", "step": i, "rank": 0, "t_start_s": start,
                      "step_time_s": length})
        start += length
    return [{**r, "point_id": "p"} for r in [*faults, *steps, *samples]]


def _sample(at: float, down_ab: int, down_ba: int, link: str = "a-b") -> dict[str, Any]:
    return {"kind": "link_sample", "link": link, "t_s": at - 100.0, "time_monotonic_s": at,
            "a_to_b.drops_down": down_ab, "b_to_a.drops_down": down_ba}


def test_a_fault_row_gives_the_points_own_spread_and_what_the_link_dropped() -> None:
    # ten steps around 0.3 s: deviations 0, ±0.01, ±0.02, ±0.04 from the median; step 4 holds the switch
    times = [0.30, 0.31, 0.29, 0.32, 0.52, 0.28, 0.34, 0.26, 0.30, 0.30, 0.31]
    samples = [_sample(100.5, 7, 0), _sample(100.95, 7, 0), _sample(101.45, 353, 692), _sample(101.9, 353, 692),
               _sample(101.2, 400, 900, link="c-d")]
    [row] = fault_impacts(_Run(_switch_point(times, samples)))
    assert row["step"] == 4
    others = [t for i, t in enumerate(times) if i != 4]
    median = statistics.median(t for t in times)
    mad = statistics.median(abs(t - median) for t in others)
    assert row["measured_noise_s"] == pytest.approx(1.4826 * mad) and row["measured_noise_n"] == len(others)
    assert row["measured_noise_s"] > 0.0
    # the counts of the samples bracketing the outage (and a round trip) on the faulted link only
    assert row["link_drops_down"] == {"a_to_b": 346, "b_to_a": 692}
    [shown] = fault_rows([row])
    assert f"(σ {round(1.4826 * mad * 1e3)} ms)" in shown["measured stall"]
    assert "dropped 346 a→b and 692 b→a frames while down" in shown["reading"]


def test_a_fault_row_leaves_spread_and_drops_out_when_it_cannot_know_them() -> None:
    # seven steps besides the one holding the event: too few for a spread
    short = [0.30, 0.31, 0.29, 0.32, 0.52, 0.28, 0.34, 0.26]
    # no sample after the outage within 1.5 s, and a sample before it from 2 s earlier
    far = [_sample(99.0, 0, 0), _sample(103.0, 346, 0)]
    [row] = fault_impacts(_Run(_switch_point(short, far)))
    assert "measured_noise_s" not in row and "link_drops_down" not in row
    [shown] = fault_rows([row])
    assert "σ" not in shown["measured stall"] and "dropped" not in shown["reading"]
    # another outage on the link between the two samples: its drops cannot be told from this one's
    times = [0.30, 0.31, 0.29, 0.32, 0.52, 0.28, 0.34, 0.26, 0.30, 0.30, 0.31]
    records = _switch_point(times, [_sample(100.95, 0, 0), _sample(101.45, 400, 400)])
    [alone] = fault_impacts(_Run(records))
    assert alone["link_drops_down"] == {"a_to_b": 400, "b_to_a": 400}
    second = {**records[0], "fault_index": 1, "at_s": 1.3, "t_monotonic_s": 101.3}
    elsewhere = {**second, "link": "c-d"}
    for other, counted in ((second, False), (elsewhere, True)):
        rows = fault_impacts(_Run([*records, other]))
        first = next(r for r in rows if r["fault_index"] == 0)
        assert ("link_drops_down" in first) is counted
    # a counter the link does not keep (netem's samples) gives no drops either
    netem = [{"kind": "link_sample", "link": "a-b", "t_s": 0.9, "time_monotonic_s": at} for at in (100.9, 101.3)]
    [row] = fault_impacts(_Run(_switch_point(short, netem)))
    assert "link_drops_down" not in row


def test_a_difference_inside_the_points_own_spread_is_said_to_be_one() -> None:
    base = {"workload": "dp", "placement": "remote", "event": "cut", "link": "a-b", "fault_index": 0, "at_s": 1.0,
            "outage_s": 2.0, "measured_by": "train_step", "model_via": "slow-start"}
    near = {**base, "measured_stall_s": 2.50, "model_stall_s": 2.10, "measured_noise_s": 0.25}
    far = {**near, "measured_noise_s": 0.10}
    [inside] = fault_rows([near])
    [outside] = fault_rows([far])
    assert inside["agreement"].startswith("differs") and outside["agreement"].startswith("differs")
    assert "within twice the spread of the point's other steps (σ 250 ms)" in inside["reading"]
    assert "within twice the spread" not in outside["reading"]
