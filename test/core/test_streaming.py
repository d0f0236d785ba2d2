import math
import threading
import time

import pytest

from panoptic_perception.core.streaming import BatchPolicy, CameraFrames, FrameCounters, RateMeter, RollingSamples, WorkerThread


def test_camera_frames_keep_each_cameras_newest_and_report_superseded():
    frames = CameraFrames()
    assert frames.put("front", 1) is False
    assert frames.put("front", 2) is True and frames.put("left", 10) is False
    batch = frames.take(timeout=0)
    assert sorted(batch.frames) == [("front", 2), ("left", 10)] and batch.unsynchronized == []
    assert frames.take(timeout=0.01) is None


def test_take_waits_for_a_producer_and_close_wakes_it():
    frames = CameraFrames()
    got = []
    consumer = threading.Thread(target=lambda: got.append(frames.take(timeout=30)))
    consumer.start()
    frames.put("front", "frame")
    consumer.join(30)
    assert got[0].frames == [("front", "frame")]
    waiter = threading.Thread(target=lambda: got.append(frames.take(timeout=30)))
    waiter.start()
    frames.close()
    waiter.join(30)
    assert not waiter.is_alive() and got[-1] is None


def test_clear_drops_the_waiting_frames():
    frames = CameraFrames()
    assert frames.clear() == []
    frames.put("front", 1)
    frames.put("left", 2)
    assert sorted(frames.clear()) == ["front", "left"] and frames.take(timeout=0) is None


def test_a_fast_camera_never_starves_a_slow_one():
    """max_batch 1 and a camera putting a frame before every take: the other camera's frame still goes
    out in the next batch (cameras served longest ago first)."""
    frames = CameraFrames(BatchPolicy(max_batch=1))
    served = []
    frames.put("slow", "s0")
    for i in range(6):
        frames.put("fast", f"f{i}")
        served.append(frames.take(timeout=0).frames[0][0])
    assert served[:2] in (["fast", "slow"], ["slow", "fast"]) and served.count("slow") == 1
    frames.put("slow", "s1")
    frames.put("fast", "f6")
    assert frames.take(timeout=0).frames == [("slow", "s1")], "served longest ago goes first"


def test_synchronized_batches_take_frames_within_the_tolerance_and_drop_older_ones():
    frames = CameraFrames(BatchPolicy("synchronized", sync_tolerance_s=0.01, sync_timeout_s=30))
    frames.put("front", "f", stamp_s=100.000)
    frames.put("left", "l", stamp_s=100.005)
    frames.put("rear", "r", stamp_s=99.9)  # a frame of the previous trigger
    batch = frames.take(timeout=0)  # every active camera has a frame: no waiting
    assert sorted(batch.frames) == [("front", "f"), ("left", "l")] and batch.unsynchronized == ["rear"]


def test_synchronized_batches_wait_for_an_active_camera_but_not_for_ever():
    frames = CameraFrames(BatchPolicy("synchronized", sync_tolerance_s=0.01, sync_timeout_s=0.2))
    frames.put("front", "f0", stamp_s=1.0)
    frames.put("left", "l0", stamp_s=1.0)
    assert len(frames.take(timeout=0).frames) == 2
    frames.put("front", "f1", stamp_s=2.0)  # left is active (it sent a frame) but silent now
    late = threading.Timer(0.05, lambda: frames.put("left", "l1", stamp_s=2.0))
    late.start()
    assert sorted(frames.take(timeout=0).frames) == [("front", "f1"), ("left", "l1")], "waited for left"
    started = time.monotonic()
    frames.put("front", "f2", stamp_s=3.0)
    assert frames.take(timeout=0).frames == [("front", "f2")], "left stayed silent: left out"
    assert time.monotonic() - started >= 0.2


def test_batch_policy_rejects_bad_values():
    with pytest.raises(ValueError, match="newest, synchronized"):
        BatchPolicy("oldest")
    with pytest.raises(ValueError, match="max_batch"):
        BatchPolicy(max_batch=0)


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


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_worker_thread_runs_jobs_and_batches_on_one_thread():
    seen = []
    worker = WorkerThread(lambda batch: seen.append((batch.frames, threading.current_thread().name)), name="torch")
    try:
        assert worker.call(lambda: threading.current_thread().name) == "torch"
        with pytest.raises(ZeroDivisionError):
            worker.call(lambda: 1 / 0)
        worker.frames.put("front", "ignored while disabled")
        assert worker.enable_frames(False) == ["front"], "disabling drops the waiting frame"
        worker.enable_frames(True)
        worker.frames.put("front", "frame")
        wait_until(lambda: seen)
        assert seen == [([("front", "frame")], "torch")]
        assert worker.call(lambda: worker.call(lambda: 7)) == 7, "a job may call back into the worker"
    finally:
        worker.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        worker.call(lambda: None)


def test_worker_thread_survives_a_failing_batch_and_reports_it():
    faults, done = [], []

    def process(batch):
        if batch.frames[0][1] == "bad":
            raise KeyError("broken message")
        done.append(batch.frames[0][1])

    worker = WorkerThread(process, on_fault=faults.append)
    try:
        worker.enable_frames(True)
        for item in ("bad", "good"):
            worker.frames.put("front", item)
            wait_until(lambda: len(faults) + len(done) == ("bad", "good").index(item) + 1)
        assert done == ["good"] and worker.faults == 1 and isinstance(faults[0], KeyError) and worker.alive
    finally:
        worker.stop()


def test_a_worker_thread_that_ended_says_why_instead_of_hanging():
    def process(batch):
        raise SystemExit("pulled out")

    worker = WorkerThread(process)
    worker.enable_frames(True)
    worker.frames.put("front", "frame")
    wait_until(lambda: not worker.alive)
    assert worker.ended_by == "SystemExit: pulled out"
    with pytest.raises(RuntimeError, match="the worker thread has stopped: SystemExit: pulled out"):
        worker.call(lambda: None)


def test_a_camera_with_a_wrong_clock_loses_only_its_own_frames():
    frames = CameraFrames(BatchPolicy("synchronized", sync_tolerance_s=0.01, sync_timeout_s=30))
    frames.put("front", "f", stamp_s=100.000)
    frames.put("left", "l", stamp_s=100.004)
    frames.put("broken", "b", stamp_s=105.0)  # 5 s ahead
    batch = frames.take(timeout=0)
    assert sorted(batch.frames) == [("front", "f"), ("left", "l")] and batch.unsynchronized == ["broken"]


def test_clearing_while_a_synchronized_take_waits_ends_the_wait_without_a_batch():
    frames = CameraFrames(BatchPolicy("synchronized", sync_timeout_s=30))
    frames.put("front", "f0")
    frames.put("left", "l0")
    frames.take(timeout=0)
    got = []
    frames.put("front", "f1")  # left is active: the take waits for it
    waiter = threading.Thread(target=lambda: got.append(frames.take(timeout=0)))
    waiter.start()
    wait_until(lambda: frames.clear() == ["front"] or not waiter.is_alive())
    waiter.join(30)
    assert not waiter.is_alive() and got == [None]
