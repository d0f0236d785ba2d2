"""The package's errors: every error it raises on purpose derives from :class:`PanopticPerceptionError`.

An application (the command line, the ROS node) catches ``PanopticPerceptionError`` to tell a problem
of the input (a missing or unfit weights file, an unknown backend, an option out of range, a frame
that cannot be decoded) from a bug, which raises anything else and deserves its traceback. Each
subclass also derives from the built-in error callers caught before the base existed (``ValueError``,
``RuntimeError``, ``KeyError``), so that ``except ValueError`` still catches an
:class:`~panoptic_perception.core.preprocess.InvalidImageError`.

The subclasses live beside the code that raises them:

- :class:`ConfigurationError` (here): an option, argument or configuration value the package refuses;
- ``InvalidImageError`` (``core/preprocess.py``) and its ``RejectedImage`` (``core/messages.py``);
- ``CalibrationError`` (``core/ground.py``): a camera calibration or mount that cannot place pixels on the ground;
- ``WeightsError`` (``backends/weights.py``), ``UnknownBackendError`` (``backends/registry.py``);
- ``ExportError`` (``deploy/onnx_export.py``), ``RuntimeUnavailableError`` (``deploy/runtime.py``).

This module imports nothing of the package, so that every layer can import it.
"""

from __future__ import annotations


class PanopticPerceptionError(Exception):
    """Base of the errors this package raises on purpose: a problem of the input, not a bug."""


class ConfigurationError(PanopticPerceptionError, ValueError):
    """An option, argument or configuration value the package refuses: an unknown backend option or
    one of the wrong type, a threshold out of range, a malformed data spec, a training config that
    cannot run, command-line options that contradict each other."""
