"""Golden outputs: what the package computes today, recorded so that a restructuring proves it changes
nothing (issue 36). ``python test/golden_outputs.py record`` rewrites ``test/golden/`` (run it only when
an output is meant to change, and say why in the commit); ``test_golden_outputs.py`` compares.

Recorded: every registered backend with its bundled weights on three held-out synthetic frames (masks,
class maps, panoptic ids, segments, boxes, scores, class ids), the official TwinLiteNet weights on one
reference frame (when ``../shared`` is present), and SHA-256 digests of ``generate_scene(seed)``'s image
and label arrays for 50 seeds.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden"
FRAME_SEEDS = (5_000_000, 5_000_001, 5_000_002)  # held-out seeds (neither training nor validation)
FRAME_SIZE = (640, 360)
SCENE_SEEDS = range(50)
REFERENCE_FRAME = "caeb782d-4a20b7c4.jpg"


def result_arrays(result, prefix: str) -> dict[str, np.ndarray]:
    """Every output of a PerceptionResult as named arrays (timings left out)."""
    arrays = {}
    for field in ("drivable_mask", "lane_mask", "semantic", "panoptic"):
        value = getattr(result, field)
        if value is not None:
            arrays[f"{prefix}/{field}"] = np.asarray(value)
    if result.detections is not None:
        arrays[f"{prefix}/boxes"] = result.detections.boxes
        arrays[f"{prefix}/scores"] = result.detections.scores
        arrays[f"{prefix}/class_ids"] = result.detections.class_ids
    if result.segments is not None:
        arrays[f"{prefix}/segments"] = np.array(
            [(s.id, s.category_id, int(s.is_thing), s.area, *s.bbox) for s in result.segments], np.int64
        ).reshape(-1, 8)
        arrays[f"{prefix}/segment_scores"] = np.array([s.score for s in result.segments], np.float64)
    return arrays


def backend_outputs() -> dict[str, np.ndarray]:
    """Each registered backend's outputs on the synthetic frames, with its bundled weights."""
    from panoptic_perception.backends import create_backend, list_backends
    from panoptic_perception.data.synthetic import generate_scene

    images = [generate_scene(seed, *FRAME_SIZE).image for seed in FRAME_SEEDS]
    arrays = {}
    for name in list_backends():
        backend = create_backend(name)
        for seed, image in zip(FRAME_SEEDS, images):
            arrays.update(result_arrays(backend(image), f"{name}/{seed}"))
    return arrays


def official_twinlitenet_outputs(reference: Path) -> dict[str, np.ndarray]:
    """The official TwinLiteNet weights on one real BDD100K frame."""
    import cv2

    from panoptic_perception.backends import create_backend

    backend = create_backend("twinlitenet", weights=str(reference / "twinlitenet" / "best.pth"))
    image = cv2.imread(str(reference / "images" / REFERENCE_FRAME))
    return result_arrays(backend(image), "official_twinlitenet")


def scene_digests() -> dict[str, str]:
    """SHA-256 of each generated scene's image and label arrays, by ``seed/field``."""
    from panoptic_perception.data.synthetic import generate_scene

    digests = {}
    for seed in SCENE_SEEDS:
        scene = generate_scene(seed)
        for field in ("image", "drivable_mask", "lane_mask", "semantic", "panoptic"):
            digests[f"{seed}/{field}"] = digest(getattr(scene, field))
        digests[f"{seed}/segments"] = digest(np.array(
            [(s.id, s.category_id, int(s.is_thing), s.area, *s.bbox) for s in scene.segments], np.int64))
        digests[f"{seed}/boxes"] = digest(scene.detections.boxes)
    return digests


def digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha256(f"{array.dtype.str}{array.shape}".encode() + array.tobytes()).hexdigest()


def record(reference: Path | None) -> None:
    import torch

    torch.set_num_threads(1)  # as the test suite runs
    GOLDEN.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN / "backends.npz", **backend_outputs())
    if reference is not None:
        np.savez_compressed(GOLDEN / "official_twinlitenet.npz", **official_twinlitenet_outputs(reference))
    (GOLDEN / "scenes.json").write_text(json.dumps(scene_digests(), indent=0, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["record"]:
        sys.exit("usage: python test/golden_outputs.py record")
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference"
    record(shared if (shared / "twinlitenet" / "best.pth").is_file() else None)
