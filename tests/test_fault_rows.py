"""Fault rows: per workload per fault event, the measured stall beside the model's, in words, in the CLI and report.

The run is the fake experiment (no root, no network); the test then lays fault
records and absolute times over its records, as the runner and agents write
them on a real corridor, and checks what the rows, the table and the report say.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_experiment_fakes import run_fake, use_fakes  # noqa: F401

from corridor.cli import cli
from corridor.results.report import write_report
from corridor.results.rundir import RECORDS, read_run
from corridor.spec.faults import (
    fault_impacts,
    fault_records,
    fault_rows,
    format_fault_table,
    link_changes,
    parse_faults,
)

pytestmark = pytest.mark.usefixtures("use_fakes")

SMALL = """
name: fake-faults
topology: two-site
placements:
  - name: local
  - name: remote
    servers: [remote]
    clients: [city]
    ranks: [remote, city]
workloads:
  - name: dp
    type: fake-dp
    params: {steps: 8, compute_s: 0.1}
  - name: diloco
    type: fake-diloco
    params: {steps: 8}
  - name: chat
    type: fake-chat
    params: {requests: 40}
    slo: {ttft: 250ms, tpot: 100ms}
repetitions: 1
seed: 3
"""

T0_S = 1000.0  # the machine's monotonic clock when each remote point starts
CUT_AT_S = 1.0  # into the point
STALL_STEP = 3  # dp's step that holds the cut
DP_EXTRA_S = 3.8  # how much longer that step took
CHAT_RECOVERY_S = 2.3  # after the cut starts, when requests sent into it get their first token


def _fault(link: str = "remote-city") -> dict[str, Any]:
    events = parse_faults([{"at": f"{CUT_AT_S}s", "event": "cut", "duration": "2s"}], path="t")
    changes = link_changes(events, [link])
    applied = {link: [{"applied_monotonic_s": T0_S + CUT_AT_S}, {"applied_monotonic_s": T0_S + CUT_AT_S + 2.0}]}
    return fault_records(events, changes, T0_S, applied, {link: {"delay_ms": 25.0, "rate_mbps": 1000.0}})[0]


def _lay_faults(run_dir: str) -> None:
    """Give the remote points a 2 s cut and the absolute times the real agents write."""
    path = os.path.join(run_dir, RECORDS)
    records = [json.loads(line) for line in Path(path).read_text().splitlines()]
    out: list[dict[str, Any]] = []
    remote = sorted({r["point_id"] for r in records if r.get("placement") == "remote" and r.get("point_id")
                     and r.get("kind") != "point"})
    for r in records:
        pid = r.get("point_id")
        if pid in remote and r.get("kind") == "train_step":
            step = int(r["step"])
            base = float(r["step_time_s"])
            # step STALL_STEP starts 50 ms before the cut
            r["t_start_s"] = (T0_S + CUT_AT_S - 0.05 + (step - STALL_STEP) * base
                              + (DP_EXTRA_S if step > STALL_STEP else 0.0))
            if step == STALL_STEP and r["workload"] == "dp":
                r["step_time_s"] = base + DP_EXTRA_S
            elif step == STALL_STEP:
                r["step_time_s"] = base + 0.01  # diloco: no outer sync under way
        if pid in remote and r.get("kind") == "request":
            send = T0_S + float(r["t_send_s"])
            r["t_send_monotonic_s"] = send
            cut = T0_S + CUT_AT_S
            if send <= cut < send + float(r["ttft_s"]) or cut <= send < cut + 2.0:
                r["ttft_s"] = cut + CHAT_RECOVERY_S - send
        if r.get("kind") == "point" and pid in remote:
            out.append({**_fault(), "point_id": pid, "placement": "remote", "group": r["group"],
                        "repetition": 0})
        out.append(r)
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in out))


@pytest.fixture
def fault_run(tmp_path: Path) -> str:
    run_dir = run_fake(tmp_path, text=SMALL)
    _lay_faults(run_dir)
    return run_dir


def _rows(run_dir: str) -> dict[str, dict[str, str]]:
    rows = fault_rows(fault_impacts(read_run(run_dir)))
    return {r["workload"]: r for r in rows}


def test_rows_measure_each_workload_against_the_model(fault_run: str) -> None:
    impacts = {r["workload"]: r for r in fault_impacts(read_run(fault_run))}
    assert impacts["dp"]["step"] == STALL_STEP
    assert impacts["dp"]["measured_stall_s"] == pytest.approx(DP_EXTRA_S, abs=0.02)
    assert impacts["dp"]["model_stall_s"] == pytest.approx(3.725)
    # the requests sent into the cut wait for it: the longest of their TTFTs minus the median
    requests = [r for r in read_run(fault_run).records if r.get("kind") == "request" and r["placement"] == "remote"]
    cut = T0_S + CUT_AT_S
    touched = [r for r in requests if r["t_send_monotonic_s"] + r["ttft_s"] == pytest.approx(cut + CHAT_RECOVERY_S)]
    others = sorted(r["ttft_s"] for r in requests if r not in touched)
    assert impacts["chat"]["requests_in_flight"] == len(touched) >= 10
    assert impacts["chat"]["median_ttft_s"] == pytest.approx((others[len(others) // 2] + others[~len(others) // 2]) / 2)
    assert impacts["chat"]["measured_stall_s"] == pytest.approx(
        max(r["ttft_s"] for r in touched) - impacts["chat"]["median_ttft_s"])
    rows = _rows(fault_run)
    assert set(rows) == {"dp", "diloco", "chat"}
    dp = rows["dp"]
    assert dp["fault"] == "a 2.0 s cut at 1 s on remote-city"
    assert dp["measured stall"] == "3.8 s" and dp["model"] == "3.7 s (rto)" and dp["agreement"] == "agrees"
    assert dp["reading"] == "dp stalls 3.8 s for a 2.0 s cut: the outage plus TCP's retransmission back-off"
    assert rows["diloco"]["reading"].startswith("diloco rides through a 2.0 s cut: 10 ms beyond its median step")
    assert "between outer syncs" in rows["diloco"]["reading"]
    # the model, per request: one sent into the cut on a keep-alive connection is retried 0.25, 0.5, 1.0 and 2.0 s
    # after it went out (Linux on a 50 ms path), so one sent at the cut's start waits 2.0 s; a window-limited
    # flow would wait 3.725 s, kept beside it
    assert impacts["chat"]["model_via"] == "per-request"
    assert impacts["chat"]["model_stall_s"] == pytest.approx(2.0)
    assert impacts["chat"]["model_flow_stall_s"] == pytest.approx(3.725)
    chat = rows["chat"]
    assert chat["model"] == "2.0 s (per-request)" and chat["agreement"] == "differs by 296 ms (longer)"
    assert "longer than the model's 2.0 s" in chat["reading"] and "does not explain" in chat["reading"]
    table = format_fault_table(list(rows.values()))
    assert table.splitlines()[0].split() == ["workload", "corridor", "fault", "measured", "stall", "model",
                                             "agreement", "reading"]


def test_repetitions_make_one_row_with_their_median_and_range() -> None:
    base = {"workload": "dp", "placement": "remote", "sweep": "", "fault_index": 0, "link": "l", "event": "cut",
            "at_s": 1.0, "outage_s": 2.0, "model_stall_s": 3.725, "model_via": "rto", "measured_by": "train_step"}
    rows = fault_rows([{**base, "measured_stall_s": s} for s in (3.5, 3.8, 4.4)])
    assert len(rows) == 1 and rows[0]["measured stall"] == "3.8 s [3.5 s, 4.4 s], n=3"
    apart = fault_rows([{**base, "measured_stall_s": 3.8}, {**base, "measured_stall_s": 1.0, "sweep": "3268km"}])
    assert [r["corridor"] for r in apart] == ["remote", "remote (3268km)"]


def test_a_request_workload_without_absolute_send_times_says_so() -> None:
    rows = fault_rows([{"workload": "chat", "placement": "remote", "fault_index": 0, "link": "l", "event": "cut",
                        "at_s": 1.0, "outage_s": 2.0, "model_stall_s": 3.725, "model_via": "rto",
                        "measured_stall_s": None, "note": "request records carry no absolute send time"}])
    assert rows[0]["measured stall"] == "n/a" and "no absolute send time" in rows[0]["reading"]


def test_time_scaled_requests_line_up_with_the_event() -> None:
    """t_send_monotonic_s and the fault's time are the machine's clock; ttft_s is divided by k."""
    class _Run:
        def __init__(self, records: list[dict[str, Any]]) -> None:
            self.records = records

    fault = {**_fault(), "time_scale": 2.0, "point_id": "p"}
    # sent 0.3 s (machine time) before the cut with a scaled TTFT of 0.2 s: 0.4 s machine time, in flight
    requests = [{"kind": "request", "workload": "chat", "point_id": "p", "ttft_s": 0.05, "ok": True,
                 "t_send_monotonic_s": T0_S + 0.1 * i} for i in range(5)]
    requests.append({"kind": "request", "workload": "chat", "point_id": "p", "ttft_s": 0.2, "ok": True,
                     "t_send_monotonic_s": T0_S + CUT_AT_S - 0.3})
    [impact] = fault_impacts(_Run([fault, *requests]))
    assert impact["requests_in_flight"] == 1 and impact["measured_stall_s"] == pytest.approx(0.15)


def test_verdicts_and_report_show_the_fault_rows(fault_run: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["verdicts", fault_run, "--wide"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    verdicts_at = result.output.index("verdict")
    faults_at = result.output.index("Faults:")
    assert verdicts_at < faults_at
    assert "dp stalls 3.8 s for a 2.0 s cut" in " ".join(result.output[faults_at:].split())
    as_json = CliRunner().invoke(cli, ["verdicts", fault_run, "--json"], catch_exceptions=False)
    assert "Faults:" not in as_json.output and isinstance(json.loads(as_json.output), (list, dict))
    html_path, md_path = write_report(read_run(fault_run), str(tmp_path / "report"))
    md = Path(md_path).read_text()
    assert md.index("## Verdicts") < md.index("## Faults") < md.index("## Evidence")
    assert "dp stalls 3.8 s for a 2.0 s cut: the outage plus TCP's retransmission back-off" in md
    html_text = Path(html_path).read_text()
    assert 'id="faults"' in html_text and "diloco rides through a 2.0 s cut" in html_text


def test_a_run_without_faults_prints_and_reports_none(tmp_path: Path) -> None:
    run_dir = run_fake(tmp_path, text=SMALL)
    result = CliRunner().invoke(cli, ["verdicts", run_dir], catch_exceptions=False)
    assert result.exit_code == 0 and "Faults:" not in result.output
    _, md_path = write_report(read_run(run_dir), str(tmp_path / "report"))
    assert "## Faults" not in Path(md_path).read_text()


def _requests_around_a_cut(prefill_s: float | None) -> list[dict[str, Any]]:
    """Ten quiet requests before a cut at 100 s, then five sent together 0.1 s into it (keep-alive)."""
    quiet = [{"t_send_monotonic_s": 90.0 + i, "ttft_s": 0.08, "server": "srv"} for i in range(10)]
    held = [{"t_send_monotonic_s": 100.1, "ttft_s": 2.2, "server": "srv"} for _ in range(5)]
    out = quiet + held
    if prefill_s is not None:
        for r in out:
            r["server_prefill_s"] = prefill_s
    return out


@pytest.mark.parametrize("prefill_s", [None, 0.03])
def test_requests_held_by_a_cut_queue_for_prefill_when_they_come_through(prefill_s: float | None) -> None:
    from corridor.spec.faults import _request_model

    fault = {"outage_s": 2.0, "base_delay_ms": 25.0, "event": "cut"}
    requests = _requests_around_a_cut(prefill_s)
    model = _request_model(fault, requests, 100.0, 1.0, {"median_ttft_s": 0.08})
    # each is retried 2.0 s after it went out (0.25, 0.5, 1.0, 2.0 s on a 50 ms path) and all five reach the
    # server together; prefills run one at a time, so the last waits for the four before it
    queued = 4 * (prefill_s or 0.0)
    assert model["model_stall_s"] == pytest.approx(2.0 + queued)
    assert model["model_ttft_worst_s"] == pytest.approx(2.0 + 0.08 + queued)
    assert model["model_prefill_wait_max_s"] == pytest.approx(queued)


def test_prefill_waits_are_per_server_and_first_come_first_served() -> None:
    from corridor.spec.faults import _prefill_waits

    a1, a2 = {"server": "a", "server_prefill_s": 0.05}, {"server": "a", "server_prefill_s": 0.05}
    b1 = {"server": "b", "server_prefill_s": 0.05}
    late = {"server": "a"}  # no recorded hold: the median of the others
    waits = _prefill_waits([(1.02, a2), (1.0, a1), (1.0, b1), (1.3, late)], 1.0)
    assert waits[id(a1)] == 0.0 and waits[id(b1)] == 0.0
    assert waits[id(a2)] == pytest.approx(0.03)  # behind a1's 50 ms
    assert waits[id(late)] == 0.0  # a's queue emptied at 1.10


def test_a_request_of_two_segments_just_into_a_cut_has_two_outcomes_and_is_judged_by_the_nearer() -> None:
    from corridor.spec.faults import _request_model

    fault = {"outage_s": 2.0, "base_delay_ms": 25.0, "event": "cut"}
    requests = [{**r, "request_bytes": 2300} for r in _requests_around_a_cut(None)]
    model = _request_model(fault, requests, 100.0, 1.0, {"median_ttft_s": 0.08})
    # sent 0.1 s into the cut, its probe and retries go at 0.102, 0.352, 0.852 and 1.852 s: the last lands 48 ms
    # before the link returns, so on time it waits for the next (3.852 s); a late timer brings it through at 2.0 s.
    # Either way its second segment follows one round trip (50 ms) after the retry that came through.
    assert model["model_stall_s"] == pytest.approx(3.852 + 0.05)
    assert model["model_stall_alt_s"] == pytest.approx(1.9 + 0.05)
    base = {"workload": "chat", "placement": "remote", "fault_index": 0, "link": "remote-city", "event": "cut",
            "at_s": 12.0, "outage_s": 2.0, "measured_by": "request", "model_via": "per-request",
            "model_stall_s": model["model_stall_s"], "model_stall_alt_s": model["model_stall_alt_s"]}
    for measured, judged in ((2.05, "agrees"), (4.1, "agrees"), (3.0, "differs by 902 ms (shorter)")):
        [row] = fault_rows([{**base, "measured_stall_s": measured}])
        assert row["model"].startswith("3.9 s or ") and row["model"].endswith(" s (per-request)")
        assert row["agreement"] == judged, measured
        assert "a retry fell just before the link came back" in row["reading"]


def test_a_first_token_lost_in_a_switch_is_resent_when_a_later_token_is_sacked() -> None:
    from corridor.spec.faults import _request_model

    # a 50 ms protection switch onto a 30 ms path; a request sent 12 ms before it reaches its server 13 ms in,
    # whose first token (57 ms after the send: the median TTFT less one way) goes out 45 ms into the outage and
    # is lost. Alone on its connection it would wait for its timer (250 ms on a 50 ms path). The server streams
    # on every 20 ms: the token sent 65 ms in crosses the new path, the client's SACK for it comes back 60 ms
    # later and the first token is resent at once, reaching the client 155 ms after the switch. A run of
    # experiments/faults.yaml measured 83 ms for this request's stall; its timer alone says 255 ms.
    fault = {"outage_s": 0.05, "base_delay_ms": 25.0, "delay_ms": 30.0, "event": "protection-switch"}
    median = 0.082
    request = {"t_send_monotonic_s": 100.0 - 0.0124, "ttft_s": 0.1646, "request_bytes": 2305, "tpot_s": 0.02,
               "output_tokens": 24, "server": "s", "server_prefill_s": 0.027}
    others = [{"t_send_monotonic_s": 90.0 + i, "ttft_s": median, "request_bytes": 2305, "tpot_s": 0.02,
               "output_tokens": 24, "server": "s", "server_prefill_s": 0.027} for i in range(5)]
    model = _request_model(fault, [request, *others], 100.0, 1.0, {"median_ttft_s": median})
    first_token = -0.0124 + median - 0.025
    resent_arrives = first_token + 0.02 + 3 * 0.030  # the next token, then its SACK's round trip and the resend
    assert model["model_stall_s"] == pytest.approx(resent_arrives + 0.0124 - median)
    assert model["model_stall_s"] == pytest.approx(0.085, abs=0.001)
    # a request of one token has nothing after the first to be SACKed: its timer brings it
    alone = _request_model(fault, [{**request, "output_tokens": 1}, *others], 100.0, 1.0, {"median_ttft_s": median})
    assert alone["model_stall_s"] == pytest.approx(first_token + 0.25 + 0.030 + 0.0124 - median)
