"""The one loop that runs a backend over frames: ``infer``, ``evaluate``, offline ``replay``, the demo and
training validation all run :func:`run_frames`.

Per frame, in order:

1. a frame its reader could not decode (``image`` is None) is reported with stage ``read`` and skipped;
2. with ``timed``, until one frame has gone through, the backend is called once untimed first: the
   first call allocates memory and picks kernels, and its time would otherwise be the frame's latency;
3. the backend runs (stage ``backend``), then ``on_result`` (the caller's own work with the result:
   writing files or messages; it names its stages on the :class:`~panoptic_perception.core.failures.Stage`
   it is given), then the ``evaluator`` scores the result against the frame's truth (stage ``scoring``),
   with the backend's total time as the frame's latency when ``timed``.

An ``Exception`` raised in 2 or 3 ends that frame only: it is reported once on stderr and recorded in
``failures`` (:class:`~panoptic_perception.core.failures.FrameFailures`) with the stage it reached, and
the loop goes on. A tqdm progress bar shows the frames done (``progress``).
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol

import numpy as np
from tqdm import tqdm

from ..core.failures import FrameFailures, Stage
from ..core.types import PerceptionResult
from .evaluator import Evaluator


class FrameLike(Protocol):
    """What the loop reads of a frame: a :class:`~panoptic_perception.data.sample.Sample` (with ``truth``)
    or a :class:`~panoptic_perception.core.io.Frame` (with ``source``) have it."""

    name: str
    image: np.ndarray | None  # BGR uint8 (H, W, 3); None when the frame could not be read
    error: str | None  # why image is None


def run_frames(
    backend: Callable[[np.ndarray], PerceptionResult],
    frames: Iterable[FrameLike],
    failures: FrameFailures,
    evaluator: Evaluator | None = None,
    on_result: Callable[[FrameLike, PerceptionResult, Stage], None] | None = None,
    timed: bool = True,
    progress: bool = False,
    description: str | None = None,
    total: int | None = None,
) -> int:
    """Run ``backend`` on every frame of ``frames`` as the module docstring says; returns how many frames
    went through every step (the others are in ``failures``).

    ``frames`` yields objects with ``name``, ``image`` and ``error``; the ``truth`` attribute (a
    :class:`~panoptic_perception.core.types.PerceptionResult` or None), where present, is what
    ``evaluator`` scores against, and ``source``, where present, is recorded with a failure.
    ``timed=False``: no warm-up call, and no latency given to the evaluator (training validation, whose
    summary has no latency; ``infer``, which records each frame's own timings). ``total`` and
    ``description`` label the progress bar.
    """
    done = 0
    for frame in tqdm(frames, total=total, desc=description, disable=not progress):
        source = getattr(frame, "source", None)
        if frame.image is None:
            failures.add(frame.name, "read", frame.error, source)
            continue
        with failures.frame(frame.name, "backend", source) as stage:
            if timed and not done:
                backend(frame.image)  # warm-up, untimed
            result = backend(frame.image)
            if on_result is not None:
                on_result(frame, result, stage)
            if evaluator is not None:
                stage.name = "scoring"
                evaluator.add(frame.name, result, getattr(frame, "truth", None), result.timings.total_ms if timed else None)
            done += 1
    return done
