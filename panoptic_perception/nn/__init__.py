"""Building blocks and ops shared by the backends (plain torch; no torchvision)."""

from typing import Callable

import torch
from torch import nn

from .batchnorm_folding import batchnorm_affine, fold_batchnorm
from .reparameterize import reparameterize


def count_parameters(module: nn.Module) -> int:
    """Parameters, as papers count them (frozen inference copies included)."""
    return sum(p.numel() for p in module.parameters())


def count_flops(module: Callable[..., object], *inputs: torch.Tensor) -> int:
    """Floating-point operations of one call of ``module`` (a network, or a backend's ``forward`` where the
    network takes more than the batch; a multiply-add counts as 2), as PyTorch's flop counter sees them:
    convolutions and matrix products, which dominate these networks."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


__all__ = ["batchnorm_affine", "count_flops", "count_parameters", "fold_batchnorm", "reparameterize"]
