"""The model predicts the statistic the verdict compares: the step walk's median and the serving simulation."""

from __future__ import annotations

import pytest

from corridor.planning.plan import PathParams
from corridor.workloads.inference import model as ai
from corridor.workloads.training.model import TcpAssumptions, window_trajectory

LOSSY = PathParams("a", "b", 1000.0, 25.0, 50.0, 1e-5, 6_250_000, 0.0, ("a-b",))


def test_window_starts_below_the_overshoot_and_is_cut_once_per_inverse_loss_packets() -> None:
    tcp = TcpAssumptions(cc="cubic", window_bytes=64 << 20)
    # 50,000 packets a step at p = 1e-5: a loss every second step; the connection busy 0.1 s a step
    windows = window_trajectory(LOSSY, 50_000, 11, lambda _w: 0.1, tcp)
    assert len(windows) == 10
    overshoot = 1e9 / 8 * 0.05 + 6_250_000
    assert windows[0] == pytest.approx(0.7 * overshoot, rel=1e-6)
    # 4.5 expected losses by the last step: four cuts taken, a little cubic regrowth in between
    assert 0.7**5 * windows[0] < windows[-1] < 0.7**4 * windows[0] * 1.15
    # no loss: the window never shrinks
    clean = window_trajectory(PathParams("a", "b", 1000.0, 25.0, 50.0, 0.0, 6_250_000, 0.0, ("a-b",)), 50_000, 11,
                              lambda _w: 0.1, tcp)
    assert min(clean) >= clean[0]


def _setup(**kw: object) -> ai.ServingSetup:
    base: dict[str, object] = {"client": ai.Leg(0.025, 0.025, 1e9), "prefill_s_per_token": 0.0,
                               "prefill_base_s": 0.05, "tpot_s": 0.02}
    base.update(kw)
    return ai.ServingSetup(**base)  # type: ignore[arg-type]


def test_one_request_on_an_idle_server_is_the_closed_formula() -> None:
    out = ai.simulate_serving([[ai.Call(0.0, 100, 5)]], _setup())
    assert out[0]["ttft_s"] == pytest.approx(0.05 + 0.05)
    assert out[0]["e2e_s"] == pytest.approx(0.10 + 4 * 0.02)


def test_prefills_queue_in_arrival_order() -> None:
    calls = [[ai.Call(0.001 * i, 100, 2)] for i in range(4)]
    ttft = [r["ttft_s"] for r in ai.simulate_serving(calls, _setup())]
    # each waits for the prefills before it (50 ms each), less its own later arrival
    assert ttft == pytest.approx([0.10 + 0.05 * i - 0.001 * i for i in range(4)])


def test_a_call_beyond_the_warm_connections_pays_a_handshake() -> None:
    calls = [[ai.Call(0.0, 100, 2)], [ai.Call(0.0, 100, 2)]]
    out = ai.simulate_serving(calls, _setup(warm_connections=1, prefill_base_s=0.0))
    assert out[1]["ttft_s"] - out[0]["ttft_s"] == pytest.approx(0.05)


def test_kv_transfers_pay_slow_start_and_share_the_link() -> None:
    kv = ai.Leg(0.025, 0.025, 1e9, 6_250_000)
    one = ai.simulate_serving([[ai.Call(0.0, 100, 2)]], _setup(kv=kv, kv_bytes_per_token=400_000, prefill_base_s=0.0))
    serial = 100 * 400_000 * 8 / 1e9
    # at least the serialisation plus the round trips, and slow start costs several RTTs more
    assert one[0]["kv_transfer_s"] > serial + 0.025 + 3 * 0.05
    two = ai.simulate_serving([[ai.Call(0.0, 100, 2)], [ai.Call(0.0, 100, 2)]],
                              _setup(kv=kv, kv_bytes_per_token=400_000, prefill_base_s=0.0))
    assert max(r["kv_transfer_s"] for r in two) > one[0]["kv_transfer_s"] + 0.5 * serial


def test_closed_loop_users_wait_for_their_own_answers() -> None:
    sessions = [[ai.Call(0.0, 100, 3, client=0, session=s, index=i) for i in range(2)] for s in range(4)]
    out = ai.simulate_serving(sessions, _setup(), closed=True, concurrency=1, clients=1)
    sends = sorted(r["t_send_s"] for r in out)
    # one user: eight calls one after the other, each a full e2e (plus the answer's trip back) apart
    assert len(out) == 8
    assert all(b - a >= 0.10 + 2 * 0.02 for a, b in zip(sends, sends[1:], strict=False))
