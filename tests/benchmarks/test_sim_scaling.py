"""The checks of benchmarks/sim_scaling.py: CPU sets per replica, the simulation-stage timing read from
events.jsonl, and the loud failures when results differ or a replica is left idle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import sim_scaling  # noqa: E402


def test_cpu_sets_are_disjoint_when_there_are_enough_cpus_and_wrap_when_not():
    assert sim_scaling.cpu_sets(list(range(16)), 3, 5) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    assert sim_scaling.cpu_sets([0, 1], 3, 1) == [[0], [1], [0]]
    assert sim_scaling.cpu_sets([2, 5], 1, 1) == [[2]]


def test_the_digest_ignores_the_timing_and_nothing_else():
    result = {"seed": "1", "month_stats": [{"mean": 0.1}], "kernel_seconds": 1.5}
    same = sim_scaling.simulation_digest(dict(result, kernel_seconds=9.0))
    assert sim_scaling.simulation_digest(result) == same
    assert sim_scaling.simulation_digest(dict(result, month_stats=[{"mean": 0.1 + 2**-55}])) != same


def test_the_simulation_stage_is_timed_from_its_events(tmp_path):
    def event(kind, stamp, **payload):
        return json.dumps({"type": kind, "time": f"2026-11-25T09:00:{stamp}Z", "payload": payload})

    events = tmp_path / "events.jsonl"
    events.write_text("\n".join([
        event("stage.started", "00.000000", stage="competitors"),
        event("stage.completed", "01.000000", stage="competitors"),
        event("stage.started", "01.250000", stage="simulation"),
        event("budget.reserved", "01.300000"),
        event("stage.completed", "04.000000", stage="simulation", kernel_seconds=2.5),
        event("stage.started", "04.100000", stage="analysis"),
    ]) + "\n")
    wall, kernel = sim_scaling.simulation_stage(events)
    assert wall == pytest.approx(2.75, abs=1e-6) and kernel == 2.5


def test_differing_results_fail_loudly():
    same = {"digest": "a" * 64}
    assert sim_scaling.check_identical({1: [same, same], 2: [same]}) == "a" * 64
    with pytest.raises(SystemExit, match="not bit-identical"):
        sim_scaling.check_identical({1: [same, same], 2: [same, {"digest": "b" * 64}]})


def test_an_idle_replica_fails_loudly():
    sim_scaling.check_spread(3, [{"replica_cpu": [1.4, 1.2, 1.5]}])
    with pytest.raises(SystemExit, match=r"replica\(s\) \[1\]"):
        sim_scaling.check_spread(3, [{"replica_cpu": [1.4, 1.2, 1.5]}, {"replica_cpu": [2.0, 0.05, 2.1]}])
