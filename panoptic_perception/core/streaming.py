"""Processing a live stream: keep only the newest frame, count what happens to frames, measure rates.

A camera delivers frames faster than a slow backend can process them. Queueing them would grow the
latency without bound; :class:`LatestFrameSlot` keeps only the newest one, so a consumer always works
on the freshest frame and the producer never blocks.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class LatestFrameSlot(Generic[T]):
    """A one-element mailbox: ``put`` replaces, ``take`` waits for and removes the newest item."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced an item nobody took (a superseded frame)."""
        with self._condition:
            superseded = self._item is not None
            self._item = item
            self._condition.notify()
            return superseded

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to ``timeout`` seconds; None on timeout or once closed."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._item is not None or self._closed, timeout):
                return None
            item, self._item = self._item, None
            return item

    def clear(self) -> bool:
        """Drop a waiting item; True if there was one."""
        with self._condition:
            had_item, self._item = self._item is not None, None
            return had_item

    def close(self) -> None:
        """Wake every waiting ``take`` (they return None) and refuse to wait from now on."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def reopen(self) -> None:
        with self._condition:
            self._closed = False


@dataclass
class FrameCounters:
    """What happened to the frames of a stream since start."""

    received: int = 0
    processed: int = 0
    dropped_stale: int = 0  # older than the allowed age when inference could start
    dropped_superseded: int = 0  # replaced by a newer frame before inference could start
    rejected_bad: int = 0  # malformed input (encoding, size, corrupt data)
    backend_errors: int = 0  # the backend raised on a valid frame

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


class RollingSamples:
    """The last ``size`` values of a measurement, with percentiles."""

    def __init__(self, size: int = 300) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(float(value))

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, q: float) -> float:
        """Linear-interpolated percentile (0..100); NaN without samples."""
        if not self._values:
            return math.nan
        ordered = sorted(self._values)
        position = (len(ordered) - 1) * q / 100
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def median(self) -> float:
        return self.percentile(50)


class RateMeter:
    """Events per second over the last ``window_s`` seconds (falls to 0 when events stop)."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()
        self._first: float | None = None

    def tick(self) -> None:
        now = self._clock()
        if self._first is None:
            self._first = now
        self._times.append(now)

    def rate(self) -> float:
        if self._first is None:
            return 0.0
        now = self._clock()
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        elapsed = min(self.window_s, now - self._first)
        return len(self._times) / elapsed if elapsed > 0 else 0.0


class WorkerThread(Generic[T]):
    """One thread that does all heavy work: jobs handed over with :meth:`call`, and, while enabled,
    the newest frame of its :attr:`slot` given to ``process_frame``.

    All torch computation of a process belongs on one thread: once a second thread has run parallel
    work, PyTorch's OpenMP runtime runs the other thread's at about half speed on a 2-core machine
    (measured: 19 ms → 36 ms per TwinLiteNet frame). Building, warming up and reloading a backend
    therefore go through :meth:`call`, not the caller's own thread.
    """

    def __init__(self, process_frame: Callable[[T], None], name: str = "worker", poll_s: float = 0.02) -> None:
        self.slot: LatestFrameSlot[T] = LatestFrameSlot()
        self._process_frame = process_frame
        self._jobs: queue.Queue = queue.Queue()
        self._poll_s = poll_s
        self._frames_enabled = False
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function`` on the worker thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return function(*args, **kwargs)
        if self._stopped:
            raise RuntimeError("the worker thread has stopped")
        future: Future = Future()
        self._jobs.put((future, function, args, kwargs))
        return future.result()

    def enable_frames(self, enabled: bool) -> None:
        """Start or stop processing frames; stopping drops a frame still waiting."""
        self._frames_enabled = enabled
        if not enabled:
            self.slot.clear()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopped = True
        self._frames_enabled = False
        self.slot.close()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopped:
            self._run_jobs()
            if self._frames_enabled:
                item = self.slot.take(timeout=self._poll_s)  # wakes at once for a frame
                if item is not None and self._frames_enabled:
                    self._process_frame(item)
            else:
                time.sleep(self._poll_s)
        self._run_jobs()

    def _run_jobs(self) -> None:
        while True:
            try:
                future, function, args, kwargs = self._jobs.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function(*args, **kwargs))
                except BaseException as error:  # handed to the caller
                    future.set_exception(error)
