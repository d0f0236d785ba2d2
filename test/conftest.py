"""Shared fixtures: the reference data in ../shared (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests share 2 cores with their own child processes (node, camera) and whatever else runs. OpenMP
# threads that spin at barriers then lose their core for whole scheduler slices (TwinLiteNet: 23 ms per
# frame alone, up to 1.7 s while other processes ran); waiting passively bounds that (40-90 ms). libgomp
# reads the policy once, when torch loads: conftest runs before any test module imports torch, and
# child processes inherit it. Speed is measured by the benchmarks, not here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_configure(config):
    """torch in this process runs on one thread (unless OMP_NUM_THREADS says otherwise). The tests' networks
    are small: with passive waiting, handing each operation to a second thread costs more than it saves
    (a training step of the small YOLOPv2 of test_yolopv2_overfit.py: 0.58 s on two threads, 0.39 s on
    one, on an idle 2-core machine), and the second core is left to the child processes and whatever else
    runs. Child processes (nodes, command-line runs) keep torch's default."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PANOPTIC_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference`` (override with PANOPTIC_SHARED_DIR); skips when it is absent."""
    path = SHARED / "reference"
    if not (path / "twinlitenet" / "best.pth").is_file():
        pytest.skip(f"reference data not available at {path} (set PANOPTIC_SHARED_DIR to ../shared)")
    return path


@pytest.fixture(scope="session")
def official_twinlitenet_weights(reference_dir: Path) -> Path:
    return reference_dir / "twinlitenet" / "best.pth"


@pytest.fixture
def make_bdd100k_folder():
    """Builds a tiny BDD100K folder in the YOLOP layout: images, drivable and lane PNGs (0/255)."""
    import cv2
    import numpy as np

    def make(root: Path, split: str = "val", names=("a", "b"), size=(128, 72)) -> Path:
        width, height = size
        for folder in ("images", "da_seg_annotations", "ll_seg_annotations"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), np.full((height, width, 3), 90, np.uint8))
            drivable = np.zeros((height, width), np.uint8)
            drivable[height // 2 :] = 255
            lane = np.zeros((height, width), np.uint8)
            lane[:, width // 2 - 4 : width // 2 - 2] = 255
            cv2.imwrite(str(root / "da_seg_annotations" / split / f"{name}.png"), drivable)
            cv2.imwrite(str(root / "ll_seg_annotations" / split / f"{name}.png"), lane)
        return root

    return make


@pytest.fixture(scope="session")
def yolopv2_small_checkpoint(tmp_path_factory):
    """(path, network): a small YOLOPv2 (width 0.25, depth 0.33, 80 slots) checkpoint saved by this project."""
    from support import randomized_yolopv2

    from panoptic_perception.backends import save_checkpoint
    from panoptic_perception.models.yolopv2 import YOLOPv2

    config = {"width": 0.25, "depth": 0.33, "num_classes": 80}
    network = randomized_yolopv2(YOLOPv2(**config))
    path = tmp_path_factory.mktemp("yolopv2") / "small.pth"
    return str(save_checkpoint(path, "yolopv2", network.state_dict(), config)), network


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    """A fresh ONNX export cache (PANOPTIC_PERCEPTION_CACHE) for the whole session, also seen by the child
    processes tests start: an export made into it is reused by every test that builds the same network."""
    path = tmp_path_factory.mktemp("onnx_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PANOPTIC_PERCEPTION_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def twinlitenet_batch_one(tmp_path_factory):
    """(backend, path): the bundled TwinLiteNet at 160x96 exported as `export` does without --dynamic-batch,
    made once for the tests that only read it (deploy/test_onnx_export.py, deploy/test_runtime_files.py,
    ros/test_node_runtime.py)."""
    from panoptic_perception import create_backend
    from panoptic_perception.deploy import export_onnx

    backend = create_backend("twinlitenet", input_size=(160, 96))
    return backend, export_onnx(backend, tmp_path_factory.mktemp("export") / "twinlitenet.onnx")
