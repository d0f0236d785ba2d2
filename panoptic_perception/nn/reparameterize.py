"""Re-parameterising a network for inference: one walker, and modules that fuse themselves.

As timm's ``reparameterize_model``: :func:`reparameterize` deep-copies the network once, puts the copy in
eval mode and calls ``reparameterize_()`` on every module that defines it, parents before their children
(so a module that drops or merges a child is not followed into it). Each such method changes its own module
in place into an equivalent one that is cheaper at inference (a BatchNorm folded into the convolution
before it, RepConv branches merged, YOLOv7's implicit terms folded, a training-only head dropped, ...) and
returns what it changed as :data:`Changes` (counts by description); a second call changes nothing and
returns no changes, so a re-parameterised network re-parameterises to itself.

The copy computes what the original computes in eval mode (to float32 rounding), from the running
statistics; its state dict loses the folded norms' keys, so load weights first, then re-parameterise.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Iterable, NamedTuple

import torch
from torch import nn

from .batchnorm_folding import fold_batchnorm

#: What a ``reparameterize_`` method changed: a count per description, e.g. ``{FOLDED_BATCHNORMS: 3}``.
Changes = Counter
FOLDED_BATCHNORMS = "BatchNorms folded into convolutions"


def has_running_statistics(norm: nn.Module) -> bool:
    """Whether ``norm`` normalises with running statistics at inference (``nn.BatchNorm2d``,
    :class:`~panoptic_perception.nn.resnet.FrozenBatchNorm2d`): a per-channel affine map that folds into
    the convolution before it. GroupNorm, and the ``nn.Identity`` left by folding, do not."""
    return all(isinstance(getattr(norm, name, None), torch.Tensor) for name in ("running_mean", "running_var"))


@torch.no_grad()
def fold_batchnorm_pairs_(module: nn.Module, pairs: Iterable[tuple[str, str]]) -> Changes:
    """In place, for each ``(convolution, norm)`` pair of attribute names of ``module`` whose norm has
    running statistics: the convolution replaced by one that also applies the norm
    (:func:`~panoptic_perception.nn.batchnorm_folding.fold_batchnorm`, same name, with a bias) and the norm
    by ``nn.Identity``. Returns ``{FOLDED_BATCHNORMS: count}``, empty when nothing was left to fold.

    Raises:
        ValueError: when a norm's channels differ from its convolution's outputs.
    """
    changes = Changes()
    for conv_name, norm_name in pairs:
        norm = getattr(module, norm_name)
        if has_running_statistics(norm):
            setattr(module, conv_name, fold_batchnorm(getattr(module, conv_name), norm))
            setattr(module, norm_name, nn.Identity())
            changes[FOLDED_BATCHNORMS] += 1
    return changes


class Reparameterized(NamedTuple):
    """The result of :func:`reparameterize`: the inference copy and what changed."""

    network: nn.Module
    changes: Changes

    def summary(self) -> str:
        """What changed, for logs: ``"BatchNorms folded into convolutions: 13; ..."`` (``"nothing"`` if no change)."""
        return "; ".join(f"{what}: {count}" for what, count in self.changes.items()) or "nothing"


def reparameterize(network: nn.Module) -> Reparameterized:
    """An inference copy of ``network`` (eval mode) in which every module that defines ``reparameterize_()``
    has fused itself (see the module docstring); ``network`` is left unchanged. A module reached twice
    (shared) is re-parameterised once."""
    fused = copy.deepcopy(network).eval()
    changes = Changes()
    seen: set[int] = set()
    pending = [fused]
    while pending:  # depth first, parents before children, children in order
        module = pending.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        method = getattr(module, "reparameterize_", None)
        if method is not None:
            changes.update(method())
        pending.extend(reversed(list(module.children())))
    return Reparameterized(fused, changes)
