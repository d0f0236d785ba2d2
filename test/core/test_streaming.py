import math
import threading
import time

import pytest

from panoptic_perception.core.streaming import FrameCounters, LatestFrameSlot, RateMeter, RollingSamples


def test_slot_keeps_only_the_newest_and_reports_superseded():
    slot = LatestFrameSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True and slot.put(3) is True
    assert slot.take(timeout=0) == 3
    assert slot.take(timeout=0.01) is None


def test_take_waits_for_a_producer_and_close_wakes_it():
    slot = LatestFrameSlot()
    got = []
    consumer = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    consumer.start()
    time.sleep(0.05)
    slot.put("frame")
    consumer.join(1)
    assert got == ["frame"]
    waiter = threading.Thread(target=lambda: got.append(slot.take(timeout=5)))
    waiter.start()
    slot.close()
    waiter.join(1)
    assert not waiter.is_alive() and got[-1] is None
    slot.reopen()
    slot.put("again")
    assert slot.take(timeout=0) == "again"


def test_clear_drops_a_waiting_frame():
    slot = LatestFrameSlot()
    assert slot.clear() is False
    slot.put(1)
    assert slot.clear() is True and slot.take(timeout=0) is None


def test_rolling_percentiles():
    samples = RollingSamples(size=5)
    assert math.isnan(samples.median())
    for v in [100, 1, 2, 3, 4, 5]:  # 100 falls out of the window
        samples.add(v)
    assert len(samples) == 5 and samples.median() == 3 and samples.percentile(100) == 5
    assert samples.percentile(95) == pytest.approx(4.8)


def test_rate_meter_counts_events_in_the_window_and_falls_to_zero():
    now = [0.0]
    meter = RateMeter(window_s=2.0, clock=lambda: now[0])
    assert meter.rate() == 0.0
    for _ in range(60):  # 30 Hz for 2 s
        meter.tick()
        now[0] += 1 / 30
    assert meter.rate() == pytest.approx(30, rel=0.05)
    now[0] += 5.0
    assert meter.rate() == 0.0


def test_counters_snapshot():
    counters = FrameCounters(received=3, rejected_bad=1)
    assert counters.snapshot()["received"] == 3 and counters.snapshot()["dropped_stale"] == 0


def test_worker_thread_runs_jobs_and_frames_on_one_thread():
    from panoptic_perception.core.streaming import WorkerThread

    seen = []
    worker = WorkerThread(lambda frame: seen.append((frame, threading.current_thread().name)), name="torch")
    try:
        assert worker.call(lambda: threading.current_thread().name) == "torch"
        with pytest.raises(ZeroDivisionError):
            worker.call(lambda: 1 / 0)
        worker.slot.put("ignored while disabled")
        time.sleep(0.1)
        assert seen == []
        worker.enable_frames(True)
        worker.slot.put("frame")
        deadline = time.monotonic() + 2
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [("frame", "torch")], "the waiting frame was dropped when disabled; the new one processed"
        assert worker.call(lambda: worker.call(lambda: 7)) == 7, "a job may call back into the worker"
    finally:
        worker.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        worker.call(lambda: None)
