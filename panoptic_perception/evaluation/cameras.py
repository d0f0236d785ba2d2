"""Metrics per camera plus overall, for data of several cameras (a bag with several image topics).

Frames of several cameras are named ``<camera>/<frame>`` (:class:`~panoptic_perception.data.rosbag.BagDataset`
names them so). :class:`CameraEvaluator` scores each frame twice, overall and for its camera, so that
every metric (AP and the dataset-wide IoUs included, which cannot be split afterwards) exists both ways;
:func:`camera_runs` turns such a run into one report run per camera beside the overall one.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ..core.labels import LabelMap
from ..core.types import Capability, PerceptionResult
from .evaluator import Evaluator


def camera_of_frame(name: str) -> str | None:
    """``front`` for a frame named ``front/frame_000003``; None for a name without a camera."""
    camera, separator, _ = name.partition("/")
    return camera if separator else None


class CameraEvaluator:
    """An :class:`Evaluator` over every frame and one per camera; the interface of :class:`Evaluator`.

    ``cameras``: every camera's name, so that a camera none of whose frames is scored still has its
    (empty) summary; :meth:`add` raises ValueError for a frame of another camera or none.
    """

    def __init__(self, label_map: LabelMap, capabilities: Iterable[Capability], cameras: Sequence[str]) -> None:
        capabilities = set(capabilities)
        self.overall = Evaluator(label_map, capabilities)
        self.cameras = {camera: Evaluator(label_map, capabilities) for camera in cameras}
        self.frames = self.overall.frames

    def add(self, name: str, prediction: PerceptionResult, truth: PerceptionResult | None, latency_ms: float | None = None) -> dict:
        """Score one frame for its camera and overall (the same checks first: it counts in both or neither);
        returns the overall per-frame record."""
        camera = camera_of_frame(name)
        if camera not in self.cameras:
            raise ValueError(f"{name}: not a frame of the cameras {', '.join(self.cameras)}")
        self.cameras[camera].add(name, prediction, truth, latency_ms)
        return self.overall.add(name, prediction, truth, latency_ms)

    def compute(self) -> dict:
        """The overall summary of :meth:`Evaluator.compute` with ``cameras``: camera → its own summary."""
        return {**self.overall.compute(), "cameras": {camera: evaluator.compute() for camera, evaluator in self.cameras.items()}}


def evaluator_for(label_map: LabelMap, capabilities: Iterable[Capability], cameras: Sequence[str]) -> Evaluator | CameraEvaluator:
    """A :class:`CameraEvaluator` for data of several ``cameras``, else an :class:`Evaluator` (its summary as ever)."""
    return CameraEvaluator(label_map, capabilities, cameras) if len(cameras) > 1 else Evaluator(label_map, capabilities)


def camera_runs(run: dict) -> list[dict]:
    """A report run (``name``, ``summary``, ``frames``, ``failed``, ...) as given to
    :func:`~panoptic_perception.evaluation.report.write_report`: where its summary has ``cameras``, the run
    with the overall summary, then one run ``<name>@<camera>`` per camera with that camera's summary,
    frames and failures; otherwise ``[run]``."""
    cameras = run["summary"].get("cameras")
    if cameras is None:
        return [run]
    overall = {**run, "summary": {key: value for key, value in run["summary"].items() if key != "cameras"}}
    return [overall, *({**run, "name": f"{run['name']}@{camera}", "summary": summary,
                        "frames": [f for f in run["frames"] if camera_of_frame(f["frame"]) == camera],
                        "failed": [f for f in run.get("failed", []) if camera_of_frame(f["frame"]) == camera]}
                       for camera, summary in cameras.items())]
