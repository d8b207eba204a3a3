"""metrics.Stopwatch: consecutive laps, each recorded as its segment, adding up to the whole."""

from __future__ import annotations

from smvm import metrics


def recorded(segment: str) -> tuple[float, float]:
    values = {s.name: s.value for f in metrics.RUN_SEGMENT.collect() for s in f.samples
              if s.labels.get("segment") == segment}
    return values.get("smvm_run_segment_seconds_sum", 0.0), values.get("smvm_run_segment_seconds_count", 0.0)


def test_laps_are_the_times_between_them_and_add_up_to_the_whole():
    clock = iter([10.0, 10.25, 10.75, 12.0])
    before = {s: recorded(s) for s in ("test.first", "test.second")}
    watch = metrics.Stopwatch(clock=lambda: next(clock))  # started at 10.0
    assert watch.lap("test.first") == 0.25
    assert watch.lap("test.second") == 0.5
    assert watch.lap("test.first") == 1.25  # a segment entered twice adds up
    first, second = recorded("test.first"), recorded("test.second")
    assert (first[0] - before["test.first"][0], first[1] - before["test.first"][1]) == (1.5, 2)
    assert (second[0] - before["test.second"][0], second[1] - before["test.second"][1]) == (0.5, 1)
