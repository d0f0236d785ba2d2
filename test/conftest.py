"""Shared fixtures: the reference data in ../shared (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
