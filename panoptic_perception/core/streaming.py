"""Processing live streams: keep only each camera's newest frame, take them in batches, count what
happens to frames, measure rates, and run all heavy work on one worker thread that survives faults.

Cameras deliver frames faster than a slow backend can process them. Queueing them would grow the
latency without bound; :class:`CameraFrames` keeps only each camera's newest one, so a consumer always
works on the freshest frames and the producers never block.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, wait
from dataclasses import asdict, dataclass
from typing import Any, Callable, Generic, NamedTuple, TypeVar

T = TypeVar("T")
_log = logging.getLogger("panoptic_perception.streaming")


BATCH_POLICIES = ("newest", "synchronized")


@dataclass(frozen=True)
class BatchPolicy:
    """How :class:`CameraFrames` forms a batch from the cameras' newest frames.

    ``mode``: ``newest`` takes every camera's waiting frame at once and never waits for another camera;
    ``synchronized`` waits (at most ``sync_timeout_s`` after the first frame of the batch arrived) until
    every camera that sent a frame within the last ``active_window_s`` has one, then takes the largest
    group of frames whose stamps lie within ``sync_tolerance_s`` of each other (the newest on a tie); the
    other waiting frames are dropped as unsynchronized (for cameras triggered together; a camera that falls
    silent stops being waited for, one with a wrong clock loses only its own frames).
    ``max_batch``: the most frames per batch; when more cameras wait, those served longest ago go first, so
    a fast camera cannot starve a slow one. Raises ValueError for values out of range.
    """

    mode: str = "newest"
    max_batch: int = 8
    sync_tolerance_s: float = 0.02
    sync_timeout_s: float = 0.1
    active_window_s: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in BATCH_POLICIES:
            raise ValueError(f"batch policy must be one of {', '.join(BATCH_POLICIES)}, got {self.mode!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        if min(self.sync_tolerance_s, self.sync_timeout_s, self.active_window_s) < 0:
            raise ValueError("sync_tolerance_s, sync_timeout_s and active_window_s must not be negative")


class Batch(NamedTuple, Generic[T]):
    """What :meth:`CameraFrames.take` hands out: ``frames`` (camera, item) in serving order, and the cameras
    whose waiting frame was dropped as unsynchronized (``synchronized`` policy)."""

    frames: list[tuple[str, T]]
    unsynchronized: list[str]


class CameraFrames(Generic[T]):
    """The newest frame of each camera, taken as batches (:class:`BatchPolicy`).

    ``put`` never blocks and replaces a camera's frame that nobody took (a superseded frame: nothing queues
    up, so latency stays bounded when the backend is slower than the cameras); ``take`` waits for a batch.
    Thread-safe: cameras put from the executor, one worker takes.
    """

    def __init__(self, policy: BatchPolicy = BatchPolicy(), clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._condition = threading.Condition()
        self._waiting: dict[str, tuple[T, float, float]] = {}  # camera -> (item, stamp s, arrival s)
        self._last_arrival: dict[str, float] = {}
        self._served: dict[str, int] = {}  # camera -> batch number it was last served in
        self._batches = 0
        self._closed = False

    def put(self, camera: str, item: T, stamp_s: float | None = None) -> bool:
        """Store ``item`` as ``camera``'s newest frame, taken at ``stamp_s`` (seconds; None or 0: its arrival
        time). True when it replaced a frame nobody took."""
        with self._condition:
            now = self._clock()
            superseded = camera in self._waiting
            self._waiting[camera] = (item, stamp_s or now, now)
            self._last_arrival[camera] = now
            self._condition.notify()
            return superseded

    def take(self, timeout: float | None = None) -> Batch[T] | None:
        """The next batch, waiting up to ``timeout`` seconds for a first frame; None on timeout or once
        closed. With the ``synchronized`` policy it may then wait up to ``sync_timeout_s`` more."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._waiting or self._closed, timeout):
                return None
            if self._closed:
                return None
            unsynchronized: list[str] = []
            if self.policy.mode == "synchronized":
                unsynchronized = self._synchronize()
                if not self._waiting and not unsynchronized:
                    return None
            cameras = sorted(self._waiting, key=lambda c: (self._served.get(c, -1), self._waiting[c][2]))
            self._batches += 1
            frames = []
            for camera in cameras[: self.policy.max_batch]:
                frames.append((camera, self._waiting.pop(camera)[0]))
                self._served[camera] = self._batches
            return Batch(frames, unsynchronized)

    def _synchronize(self) -> list[str]:
        """Wait for the active cameras (see :class:`BatchPolicy`), then keep the largest group of waiting
        frames whose stamps lie within the tolerance (the newest such group on a tie) and drop the others;
        returns the dropped frames' cameras. Called holding the condition."""
        policy = self.policy
        deadline = min(arrival for _, _, arrival in self._waiting.values()) + policy.sync_timeout_s

        def complete() -> bool:
            now = self._clock()
            active = {c for c, t in self._last_arrival.items() if now - t <= policy.active_window_s}
            return self._closed or not self._waiting or active <= self._waiting.keys() or now >= deadline

        while not complete():
            self._condition.wait(max(0.0, deadline - self._clock()))
        if not self._waiting:  # cleared meanwhile (deactivated)
            return []
        stamps = {camera: stamp for camera, (_, stamp, _) in self._waiting.items()}
        # A group ends at one frame's stamp and reaches back by the tolerance: a camera with a wrong clock
        # is a group of its own and cannot pull the others out of theirs.
        groups = [[c for c, s in stamps.items() if end - policy.sync_tolerance_s <= s <= end] for end in stamps.values()]
        best = max(groups, key=lambda group: (len(group), max(stamps[c] for c in group)))
        late = [camera for camera in stamps if camera not in best]
        for camera in late:
            del self._waiting[camera]
        return late

    def clear(self) -> list[str]:
        """Drop every waiting frame; returns their cameras."""
        with self._condition:
            cameras = list(self._waiting)
            self._waiting.clear()
            self._condition.notify_all()  # a synchronized take waiting for more frames ends
            return cameras

    def close(self) -> None:
        """Wake every waiting ``take`` (they return None) and refuse to wait from now on."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


@dataclass
class FrameCounters:
    """What happened to the frames of a stream since start."""

    received: int = 0
    processed: int = 0
    dropped_stale: int = 0  # older than the allowed age when inference could start
    dropped_superseded: int = 0  # replaced by a newer frame before inference could start
    rejected_bad: int = 0  # malformed input (encoding, size, corrupt data)
    backend_errors: int = 0  # the backend raised on a valid frame
    dropped_unsynchronized: int = 0  # outside its batch's group of stamps (synchronized batches)
    dropped_inactive: int = 0  # waiting when processing stopped (deactivate, shutdown)
    publish_errors: int = 0  # processed, but its messages could not be built or published

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
    """One thread that does all heavy work: jobs handed over with :meth:`call` or :meth:`submit`, and, while
    enabled, the batches of its :attr:`frames` given to ``process_batch``.

    All torch computation of a process belongs on one thread: once a second thread has run parallel
    work, PyTorch's OpenMP runtime runs the other thread's at about half speed on a 2-core machine
    (measured: 19 ms → 36 ms per TwinLiteNet frame). Building, warming up and reloading a backend
    therefore go through :meth:`call` / :meth:`submit`, not the caller's own thread.

    The thread survives its work: an exception raised by ``process_batch`` is counted in :attr:`faults` and
    handed to ``on_fault`` (which logs it), and the next batch goes on; a job's exception goes to its caller.
    Should the thread end all the same (a ``BaseException`` such as SystemExit), :attr:`alive` turns False,
    :attr:`ended_by` says why, and :meth:`call` raises instead of waiting forever.
    """

    def __init__(
        self,
        process_batch: Callable[[Batch[T]], None],
        frames: CameraFrames[T] | None = None,
        name: str = "worker",
        poll_s: float = 0.02,
        on_fault: Callable[[Exception], None] | None = None,
    ) -> None:
        self.frames: CameraFrames[T] = frames or CameraFrames()
        self.faults = 0
        self.ended_by: str | None = None
        self._process_batch = process_batch
        self._on_fault = on_fault
        self._jobs: queue.Queue = queue.Queue()
        self._poll_s = poll_s
        self._frames_enabled = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the thread still runs (False after :meth:`stop` or an end by a BaseException)."""
        return self._thread.is_alive() and not self._stopped

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run ``function`` on the worker thread between batches; its Future holds the result or exception.
        Raises RuntimeError when the thread has ended."""
        if not self.alive:
            raise RuntimeError(f"the worker thread has stopped{f': {self.ended_by}' if self.ended_by else ''}")
        future: Future = Future()
        self._jobs.put((future, function, args, kwargs))
        return future

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function`` on the worker thread and return its result (or raise its exception). Raises
        RuntimeError, instead of waiting forever, when the thread has ended or ends meanwhile."""
        if threading.current_thread() is self._thread:
            return function(*args, **kwargs)
        future = self.submit(function, *args, **kwargs)
        while not future.done():
            if not self._thread.is_alive():
                raise RuntimeError(f"the worker thread has stopped{f': {self.ended_by}' if self.ended_by else ''}")
            wait([future], timeout=0.5)
        return future.result()

    def enable_frames(self, enabled: bool) -> list[str]:
        """Start or stop processing frames; stopping drops the frames still waiting (returns their cameras)."""
        self._frames_enabled = enabled
        return [] if enabled else self.frames.clear()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopped = True
        self._frames_enabled = False
        self.frames.close()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # the thread ends: say why (diagnostics, call) and in the log
            self.ended_by = f"{type(error).__name__}: {error}"
            _log.critical("the worker thread %s ended: %s", self._thread.name, self.ended_by)

    def _loop(self) -> None:
        while not self._stopped:
            self._run_jobs()
            if self._frames_enabled:
                batch = self.frames.take(timeout=self._poll_s)  # wakes at once for a frame
                if batch is not None and self._frames_enabled:
                    self._process(batch)
            else:
                time.sleep(self._poll_s)
        self._run_jobs()

    def _process(self, batch: Batch[T]) -> None:
        try:
            self._process_batch(batch)
        except Exception as error:  # a fault in one batch: counted and reported, the next batch goes on
            self.faults += 1
            if self._on_fault is not None:
                try:
                    self._on_fault(error)
                except Exception:  # the report itself failed: the standard log still gets it
                    _log.exception("the fault handler failed on %r", error)
            else:
                _log.error("a batch failed: %s: %s", type(error).__name__, error)

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
