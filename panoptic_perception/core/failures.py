"""Per-frame failures of a batch run: each reported once, counted and named in the summary; the run goes on.

The loop over frames (:func:`~panoptic_perception.evaluation.loop.run_frames`: ``infer``, ``evaluate``,
offline ``replay``, the demo, training validation) runs the work of each frame inside
:meth:`FrameFailures.frame`; live ``replay`` does too.
An ``Exception`` raised there (an image that cannot be decoded, a backend or panoptic-fusion error, a
prediction that does not fit its ground truth, a file that cannot be written) ends that frame only: it
is reported on one line of stderr, recorded with the frame's name and the stage it had reached, and the
caller goes on with the next frame. ``KeyboardInterrupt`` and ``SystemExit`` do not derive from
``Exception`` and still stop the run. The commands exit with status 1 when any frame failed.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator


@dataclass
class FrameFailure:
    """One frame that was skipped: its name, the stage that failed, the error, and its source if known."""

    frame: str
    stage: str  # read, backend, output, writing, scoring, ...
    error: str
    source: str | None = None  # the input file (infer), where it differs from the frame's name

    def to_dict(self) -> dict[str, str]:
        return {key: value for key, value in asdict(self).items() if value is not None}


class Stage:
    """The stage a frame has reached (set ``name`` as the work goes on), named when the frame fails."""

    def __init__(self, name: str) -> None:
        self.name = name


def _stderr(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)  # between progress-bar updates, not through them


class FrameFailures:
    """The failed frames of one run, in the order they failed.

    ``report`` receives one line per failure (default: stderr, written so that tqdm progress bars stay
    intact), prefixed with ``label`` if given (the run's name where several runs read the same frames).
    Thread-safe: live replay scores the node's answers on its executor's thread.
    """

    def __init__(self, label: str = "", report: Callable[[str], None] | None = None) -> None:
        self.label = label
        self.report = report or _stderr
        self.failures: list[FrameFailure] = []
        self._lock = threading.Lock()

    def add(self, frame: str, stage: str, error: str, source: str | None = None) -> None:
        """Record and report a failed frame (e.g. one its reader could not decode)."""
        failure = FrameFailure(frame, stage, error, source)
        with self._lock:
            self.failures.append(failure)
        self.report(f"{self.label + ': ' if self.label else ''}skipped {frame} ({stage}): {error}")

    @contextmanager
    def frame(self, name: str, stage: str, source: str | None = None) -> Iterator[Stage]:
        """Run one frame's work in a ``with`` block; an ``Exception`` inside it ends the block, is recorded
        with the stage reached (the yielded :class:`Stage`'s ``name``) and is not raised further."""
        reached = Stage(stage)
        try:
            yield reached
        except Exception as error:  # any failure of one frame, but not KeyboardInterrupt or SystemExit
            self.add(name, reached.name, f"{type(error).__name__}: {error}", source)

    def __len__(self) -> int:
        return len(self.failures)

    def to_list(self) -> list[dict[str, str]]:
        """The failures as JSON-ready dictionaries (``frame``, ``stage``, ``error``, ``source`` if known)."""
        with self._lock:
            return [failure.to_dict() for failure in self.failures]
