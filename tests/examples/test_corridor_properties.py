"""Example topology tests a team can copy into its own suite.

Each test builds a corridor with the ``corridor_network`` fixture (shipped with the
package as a pytest plugin), measures it with :mod:`corridor.testing`, and pins a
property the team cares about. The fixture tears every network down after the
test, however the test ends. Run them with root:

    sudo .venv/bin/python -m pytest tests/examples --corridor-backend userspace
"""

from __future__ import annotations

import pytest

from corridor.links.fidelity import HostStalls
from corridor.testing import ring_busbw_mbps, rtt_ms, run_inference
from corridor.workloads.inference import run as inference

pytestmark = [pytest.mark.corridor_root, pytest.mark.corridor_slow]


def test_urumqi_beijing_rtt_stays_under_50ms(corridor_network) -> None:  # type: ignore[no-untyped-def]
    net = corridor_network("xinjiang-coastal")
    rtt = rtt_ms(net, "urm-gpu1", "bj-cli1", count=50)
    assert rtt.loss == 0
    assert rtt.median < 50.0
    # And it is a real corridor, not a LAN: the model puts it at 36 ms.
    assert rtt.median > 30.0


def test_ring_allreduce_across_the_corridor_reaches_85_percent_of_the_wan_rate(  # type: ignore[no-untyped-def]
    corridor_network,
) -> None:
    net = corridor_network("two-site", rate="200Mbit")
    # On a small shared machine (CI's has two cores) the host now and then runs neither the ranks nor
    # the delay lines for milliseconds on end; HostStalls measures that share and it comes off the
    # target, and a reading below it is taken once more (a loaded run read 164.6 Mbit/s once).
    for _attempt in range(2):
        with HostStalls() as host:
            busbw = ring_busbw_mbps(net, ["rem-gpu1", "rem-gpu2", "cty-gpu1", "cty-gpu2"], size_bytes=32 * 1024 * 1024)
        floor = (0.85 - host.summary()["stalled_fraction"]) * 200.0
        if busbw >= floor:
            break
    assert busbw >= floor


def test_ttft_p99_from_shanghai_stays_within_the_chat_slo(corridor_network) -> None:  # type: ignore[no-untyped-def]
    net = corridor_network("two-site")
    records = run_inference(
        net,
        {"pattern": "chat", "requests": 60, "rate_rps": 10, "prompt_tokens": 512, "output_tokens": 16,
         "model": "13b", "tpot_ms": 20},
        {"servers": ["rem-gpu1"], "clients": ["cty-cli1"]},
    )
    summary = inference.summarize(records, inference.Slo(ttft_s=0.25, tpot_s=0.1))
    assert summary["ok"] == 60
    assert summary["ttft_s_p99"] <= 0.25
