"""The idle-calls bench's pure pieces: its steps, per-call figures, trend, extrapolation and verdict."""

from __future__ import annotations

import pytest

from bench.idle_calls import Point, extrapolate, limit_from, marginal_kib, per_call_kib, step_targets, trend, verdict


def point(calls: int, rss_kib: int) -> Point:
    return Point(calls, calls, rss_kib, 0, 0, 1.0)


def test_steps_double_from_the_first_and_end_at_the_max() -> None:
    assert step_targets(1000, 10_000) == [1000, 2000, 4000, 8000, 10_000]
    assert step_targets(1000, 8000) == [1000, 2000, 4000, 8000]
    assert step_targets(5, 3) == [3]


def test_a_step_of_no_call_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="first \\(0\\)"):
        step_targets(0, 10)


def test_per_call_and_marginal_figures_skip_a_step_that_added_no_call() -> None:
    points = [point(1000, 10_000 + 8000), point(1000, 10_000 + 8100), point(2000, 10_000 + 16_000)]
    assert per_call_kib(10_000, points[0]) == 8.0
    assert marginal_kib(10_000, points) == [8.0, 8.0]


def test_a_cost_per_call_that_rises_with_the_calls_is_growing_and_a_steady_one_flat() -> None:
    assert trend([8.0, 8.2, 7.9, 8.1]) == "flat"
    assert trend([8.0, 9.0, 14.0, 20.0]) == "growing"
    assert trend([8.0]) == "unknown"


def test_extrapolation_carries_the_fitted_line_on() -> None:
    idle = 50_000
    points = [point(1000, idle + 2000 + 10_000), point(2000, idle + 2000 + 20_000), point(4000, idle + 2000 + 40_000)]
    assert extrapolate(idle, points, 10_000) == pytest.approx((2000 + 100_000) / 10_000)


def test_the_goal_passes_only_when_measured_at_ten_thousand_calls() -> None:
    assert "PASS" in verdict(0, [point(10_000, 150_000)], None)
    assert "FAIL" in verdict(0, [point(10_000, 250_000)], None)
    reached = verdict(0, [point(1000, 10_000), point(4000, 40_000)], "file descriptors")
    assert "FAIL (not reached: 4,000 up" in reached and "file descriptors" in reached
    assert "extrapolated, not measured: 10.0 KiB" in reached


def test_the_limit_is_named_from_the_logs() -> None:
    assert limit_from("accept: Too many open files", "", 1.0, 2) == "file descriptors"
    assert limit_from("WARNING rtp_engine: No RTP ports remaining", "", 1.0, 2) == "RTP ports"
    assert limit_from("", "unexpected message", 1.0, 2).startswith("SIPp")
    assert limit_from("", "", 9.0, 2) == "CPU (load 9.0 on 2 cores)"
    assert limit_from("", "", 1.0, 2) is None


def test_sipps_overload_warnings_are_not_failed_calls() -> None:
    errors = ("The following events occurred:\n2026-12-03\t12:40:42.672400\t1796301642.672400: Overload warning: "
              "the minor watchdog timer 500ms has been tripped (520), 119 trips remaining.\n")
    assert limit_from("", errors, 1.0, 2) is None
    assert limit_from("", errors + "Aborting call on unexpected message\n", 1.0, 2).startswith("SIPp")


def test_descriptors_near_the_limit_name_the_limit() -> None:
    assert limit_from("", "", 1.0, 2, fds=19_700, nofile=20_000).startswith("file descriptors (Asterisk 19,700")
