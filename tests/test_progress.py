"""Progress on stderr: a live bar with ETA on a terminal, the plain line-per-event log anywhere else."""

from __future__ import annotations

import io

import pytest

from corridor.cli.progress import ProgressLine, format_clock


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tty_redraws_one_line_with_a_bar_and_eta() -> None:
    stream = FakeTTY()
    clock = FakeClock()
    bar = ProgressLine(stream, width=100, clock=clock)
    bar.step("[1/4] about 0:30 left: a", done=1, total=4, eta_s=30.0, message="point a done")
    bar.step("[2/4] about 0:20 left: b", done=2, total=4, eta_s=20.0, message="b")
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r") and text.count("\r") == 2
    assert text.count("\n") == 1 and text.endswith("\n")  # only close ends the line
    first, second = text.split("\r")[1:]
    assert "ETA 0:30" in first and "1/4" in first and "point a done" in first
    assert "ETA 0:20" in second and "2/4" in second and "#" * 12 in second and "#" * 13 not in second
    assert len(second.rstrip("\n")) >= len(first)  # the shorter message is padded over the longer one
    assert "[1/4] about" not in text  # the plain log line is not what a terminal sees


def test_tty_estimates_eta_from_the_pace_when_none_is_given() -> None:
    stream = FakeTTY()
    clock = FakeClock()
    bar = ProgressLine(stream, width=100, clock=clock)
    clock.now += 20.0
    bar.step("plain", done=1, total=3, message="x")
    assert "ETA 0:40" in stream.getvalue()  # 20 s a step, two steps left
    bar.step("plain", done=3, total=3, message="y")
    assert "ETA done" in stream.getvalue()


def test_tty_line_fits_the_width() -> None:
    stream = FakeTTY()
    bar = ProgressLine(stream, width=40)
    bar.step("plain", done=1, total=2, eta_s=5.0, message="m" * 200)
    assert len(stream.getvalue().lstrip("\r")) <= 39


def test_tty_events_show_elapsed_time() -> None:
    stream = FakeTTY()
    clock = FakeClock()
    bar = ProgressLine(stream, width=80, clock=clock)
    clock.now += 65.0
    bar.event("... ping remote", message="ping remote")
    bar.close()
    assert stream.getvalue().startswith("\r") and "1:05 elapsed" in stream.getvalue()
    assert "... ping" not in stream.getvalue()


def test_not_a_tty_writes_the_plain_lines_exactly() -> None:
    stream = io.StringIO()
    bar = ProgressLine(stream, width=80)
    bar.step("[1/4] about 0:30 left: a", done=1, total=4, eta_s=30.0, message="a")
    bar.event("... ping remote", message="ping remote")
    bar.close()
    assert stream.getvalue() == "[1/4] about 0:30 left: a\n... ping remote\n"
    assert "\r" not in stream.getvalue()


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (59.6, "1:00"), (125, "2:05"), (3725, "1:02:05"),
                                               (-3, "0:00")])
def test_format_clock(seconds: float, text: str) -> None:
    assert format_clock(seconds) == text
