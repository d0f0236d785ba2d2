"""The package's errors: one base, each subclass still the built-in error its callers catch."""

from __future__ import annotations

import pytest

from panoptic_perception.backends.registry import UnknownBackendError
from panoptic_perception.backends.weights import WeightsError
from panoptic_perception.core.messages import RejectedImage
from panoptic_perception.core.preprocess import InvalidImageError
from panoptic_perception.deploy.onnx_export import ExportError
from panoptic_perception.deploy.runtime import RuntimeUnavailableError
from panoptic_perception.errors import ConfigurationError, PanopticPerceptionError


@pytest.mark.parametrize("error, builtin", [
    (InvalidImageError, ValueError), (RejectedImage, ValueError), (ConfigurationError, ValueError),
    (WeightsError, RuntimeError), (ExportError, RuntimeError), (RuntimeUnavailableError, RuntimeError),
    (UnknownBackendError, KeyError),
])
def test_every_error_of_the_package_derives_from_its_base_and_keeps_its_builtin(error, builtin):
    assert issubclass(error, PanopticPerceptionError) and issubclass(error, builtin)


def test_refused_options_raise_a_configuration_error():
    from panoptic_perception import create_backend
    from panoptic_perception.backends.base import parse_options
    from panoptic_perception.data.sources import parse_synthetic

    with pytest.raises(ConfigurationError, match="backend options are KEY=VALUE"):
        parse_options(["width"])
    with pytest.raises(ConfigurationError, match="synthetic data is synthetic:N"):
        parse_synthetic("synthetic:0")
    backend = create_backend("twinlitenet")
    with pytest.raises(ConfigurationError, match="score threshold must be in"):
        backend.set_thresholds(score=1.5)
    with pytest.raises(ConfigurationError, match="output must be one of"):  # the config's own check
        create_backend("cross_cooperative", output="sideways")
