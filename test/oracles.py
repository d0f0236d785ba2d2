"""Test-only reference implementations: torchvision's and timm's pure-Python model code.

torchvision 0.28.0 and timm 1.0.31 install from the package index (``scripts/bootstrap.sh`` puts them in
the test environment with ``--no-deps``), but torchvision's compiled extension does not load against
this torch. Their Python model code still runs once (see ``../shared/docs/reference-oracles.md``):

1. an empty module stands in for ``torchvision._meta_registrations`` (which registers meta kernels of
   the compiled ops and fails);
2. ``torchvision.extension._has_ops`` returns True and ``_assert_has_ops`` is a no-op;
3. ``torchvision::nms`` and ``torchvision::roi_align`` are defined with ``torch.library`` and get this
   package's own implementations as their (composite, so differentiable) kernels.

So torchvision's detection models run *our* NMS and RoIAlign: a parity test then compares everything
else (anchors, box coding, sampling, heads, pasting). The ops themselves have their own reference tests.
Never imported by the package: a test calls :func:`torchvision_or_skip` / :func:`timm_or_skip`.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import torch

_library = None  # keeps the torch.library registration alive for the session


def _nms_kernel(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    from panoptic_perception.nn.boxes import nms

    return nms(dets, scores, iou_threshold, max_candidates=None)


def _roi_align_kernel(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    from panoptic_perception.nn.roi_align import roi_align  # the package's RoIAlign (rois as (K, 5))

    return roi_align(input, rois, (pooled_height, pooled_width), spatial_scale, sampling_ratio, aligned)


def _import_torchvision():
    global _library
    if "torchvision" in sys.modules and _library is not None:
        return sys.modules["torchvision"]
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    torchvision = importlib.import_module("torchvision")
    # Modules import these by name, so each module's own reference is replaced (roi_align's
    # _has_ops would otherwise pick torchvision's torch.compile'd Python fallback, not our kernel).
    for name in ("torchvision.extension", "torchvision.ops.boxes", "torchvision.ops.roi_align"):
        module = importlib.import_module(name)
        if hasattr(module, "_has_ops"):
            module._has_ops = lambda: True
        if hasattr(module, "_assert_has_ops"):
            module._assert_has_ops = lambda: None
    if _library is None:
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define(
            "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
            "int sampling_ratio, bool aligned) -> Tensor"
        )
        # Composite: autograd runs through our (differentiable) implementations.
        library.impl("nms", _nms_kernel, "CompositeImplicitAutograd")
        library.impl("roi_align", _roi_align_kernel, "CompositeImplicitAutograd")
        _library = library
    return torchvision


def torchvision_or_skip():
    """torchvision's Python code running on this package's ops; skips the test where it cannot be had."""
    try:
        return _import_torchvision()
    except Exception as error:  # not installed, or a version whose import fails differently
        pytest.skip(f"torchvision (test-only reference) unavailable: {type(error).__name__}: {error}")


def timm_or_skip():
    """timm (it imports torchvision, so that is prepared first); skips where it cannot be had."""
    torchvision_or_skip()
    try:
        return importlib.import_module("timm")
    except Exception as error:
        pytest.skip(f"timm (test-only reference) unavailable: {type(error).__name__}: {error}")
