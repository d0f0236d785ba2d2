"""Building blocks and ops shared by the backends (plain torch; no torchvision)."""

from torch import nn

from .batchnorm_folding import batchnorm_affine, fold_batchnorm


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters, as papers count them."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["batchnorm_affine", "count_parameters", "fold_batchnorm"]
