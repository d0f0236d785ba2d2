"""Validation through the backend (``recipes/common.py``): the shared evaluation loop, untimed, bad samples skipped."""

from __future__ import annotations

import torch

from panoptic_perception.models.twinlitenet import TwinLiteNet
from panoptic_perception.data.sample import Sample
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.evaluation import loop
from panoptic_perception.training.recipes import common


def scene_sample(seed: int) -> Sample:
    scene = generate_scene(seed, 96, 56)
    return Sample(f"scene_{seed}", scene.image, scene.to_result())


def test_validation_scores_every_readable_sample_and_reports_the_others(capsys):
    torch.manual_seed(0)
    samples = [scene_sample(1), Sample("unreadable", None, error="cannot decode image"), scene_sample(2)]
    summary = common.validate_with_backend("twinlitenet", TwinLiteNet().eval(), {"input_width": 96, "input_height": 56}, samples)
    assert summary["frames"] == 2 and summary["driving"]["images"] == 2
    assert "latency_ms" not in summary, "validation is not timed"
    assert "validation: skipped unreadable (read): cannot decode image" in capsys.readouterr().err


def test_validation_runs_the_shared_loop_untimed(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return loop.run_frames(*args, **kwargs)

    monkeypatch.setattr(common, "run_frames", spy)
    common.validate_with_backend("twinlitenet", TwinLiteNet().eval(), {"input_width": 96, "input_height": 56}, [scene_sample(1)])
    assert len(calls) == 1 and calls[0]["timed"] is False


def test_a_network_that_fails_during_validation_raises_instead_of_scoring_the_survivors():
    import pytest

    class Broken(TwinLiteNet):
        def forward(self, image):
            raise RuntimeError("a bug in the network")

    samples = [scene_sample(1), scene_sample(2)]
    with pytest.raises(RuntimeError, match=r"validation failed on 2 of 2 samples; first: scene_1 \(backend\): "
                                           r"RuntimeError: a bug in the network"):
        common.validate_with_backend("twinlitenet", Broken().eval(), {"input_width": 96, "input_height": 56}, samples)
