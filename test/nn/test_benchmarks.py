"""The operator timings of ``python -m panoptic_perception.nn.benchmarks`` (at tiny sizes: what they
report, not how fast)."""

from __future__ import annotations

import json
import math

from panoptic_perception.nn import benchmarks


def test_median_ms_times_each_call_after_one_warm_up():
    calls = []
    assert benchmarks.median_ms(lambda: calls.append(1), runs=3) >= 0 and len(calls) == 4


def test_each_operator_is_reported_by_name_in_milliseconds():
    timings = {**benchmarks.deform_conv_ms(channels=4, size=(6, 8), runs=1),
               **benchmarks.roi_align_ms(pools=((5, 7), (3, 14)), features=(70, 80), runs=1)}
    assert sorted(timings) == ["conv2d_ms", "deform_conv_ms", "roi_align_3x14_ms", "roi_align_5x7_ms"]
    assert all(math.isfinite(ms) and ms >= 0 for ms in timings.values())


def test_command_line_prints_every_timing_as_json(monkeypatch, capsys):
    monkeypatch.setattr(benchmarks, "run", lambda runs: {"deform_conv_ms": float(runs)})
    assert benchmarks.main(["--runs", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["deform_conv_ms"] == 2.0 and printed["threads"] >= 1
