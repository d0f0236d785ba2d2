"""Segmentation losses: the semantic cross-entropy the DeepLab-style recipes share, and TwinLiteNet's
losses (paper §III-B): focal loss + Tversky loss, per segmentation head.

Semantic cross-entropy with hard pixel mining (:func:`semantic_cross_entropy`): the mean over the
``hard_pixel_fraction`` of labelled pixels with the highest loss (Panoptic-DeepLab, Cheng et al. 2020,
§3.2, which keeps the top 15 %), or over all labelled pixels at 1.0 (the papers' plain cross-entropy).
It keeps thin, rare classes (poles, pedestrians) from drowning in road and sky pixels. Optional class
weights (:func:`class_weight_vector`, by class name) scale each pixel's loss by the weight of its true class,
as ``F.cross_entropy(weight=...)`` does; the mean is then divided by the summed weights of the averaged
pixels. Mining ranks the weighted losses.

Focal loss, eq. (1): ``-1/N Σ_c Σ_i p_i(c) (1 - p̂_i(c))^γ log p̂_i(c)`` over the N pixels of the batch
(no class weighting α: the paper has none).

Tversky loss, eq. (2), summed over both classes: ``Σ_c 1 - TP_c / (TP_c + α FN_c + β FP_c)`` with soft
counts over the batch (TP = Σ p̂·p, FN = Σ (1-p̂)·p, FP = Σ p̂·(1-p)). The paper's equation prints the
denominator with minus signs, a typo: with them the ratio is not bounded. Choices where the paper is
silent: α = 0.7 weights false negatives, β = 0.3 false positives (missing a thin lane line costs more
than a few extra pixels), γ = 2 (the focal-loss paper's default), and a smoothing of 1 pixel in the
Tversky ratio so that a class absent from the batch and predicted absent costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..core.labels import LabelMap


def class_weight_vector(label_map: LabelMap, weights: Mapping[str, float]) -> torch.Tensor | None:
    """(C,) float32 loss weight of each output channel of ``label_map`` (ordered as its classes): the weight
    of a class named in ``weights``, 1 for the others; None when ``weights`` is empty (plain loss). Raises
    ValueError for a name not in ``label_map`` or a weight that is not positive."""
    if not weights:
        return None
    names = [c.name for c in label_map.classes]
    vector = torch.ones(len(names))
    for name, weight in weights.items():
        if name not in names:
            raise ValueError(f"class_weights: no class {name!r} in {label_map.name} (classes: {', '.join(names)})")
        if not weight > 0:
            raise ValueError(f"class_weights: the weight of {name!r} must be positive, got {weight!r}")
        vector[names.index(name)] = float(weight)
    return vector


def semantic_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
                           hard_pixel_fraction: float = 1.0, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of (N, C, H, W) logits against (N, H, W) int64 class indices, averaged over the
    ``hard_pixel_fraction`` (0 < f <= 1) of the pixels not equal to ``ignore_index`` with the largest loss
    (at least one pixel); with (C,) ``class_weights`` each pixel's loss is scaled by its class's weight and
    the mean is divided by the averaged pixels' summed weights. 0 when no pixel is labelled. Raises
    ValueError for a fraction outside (0, 1]."""
    if not 0.0 < hard_pixel_fraction <= 1.0:
        raise ValueError(f"hard_pixel_fraction must be in (0, 1], got {hard_pixel_fraction}")
    if class_weights is not None:
        class_weights = class_weights.to(logits.device, torch.float32)
    if hard_pixel_fraction == 1.0:
        return F.cross_entropy(logits.float(), target, weight=class_weights, ignore_index=ignore_index)
    labelled = target != ignore_index
    pixel_losses = F.cross_entropy(logits.float(), target, weight=class_weights, ignore_index=ignore_index,
                                   reduction="none")[labelled]
    if pixel_losses.numel() == 0:
        return logits.sum() * 0.0
    k = max(1, int(round(hard_pixel_fraction * pixel_losses.numel())))
    hardest, indices = pixel_losses.topk(k, sorted=False)
    if class_weights is None:
        return hardest.mean()
    return hardest.sum() / class_weights[target[labelled][indices]].sum()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss of (N, C, H, W) logits against (N, H, W) class indices."""
    log_probs = F.log_softmax(logits, dim=1)
    log_p = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)  # log p̂ of the true class
    return -((1 - log_p.exp()) ** gamma * log_p).mean()


def tversky_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.7, beta: float = 0.3, smooth: float = 1.0
) -> torch.Tensor:
    """Tversky loss of (N, C, H, W) logits against (N, H, W) class indices, summed over classes."""
    probs = F.softmax(logits, dim=1)
    one_hot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    tp = (probs * one_hot).sum(dims)
    fn = ((1 - probs) * one_hot).sum(dims)
    fp = (probs * (1 - one_hot)).sum(dims)
    return (1 - (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)).sum()


@dataclass(frozen=True)
class TwinLiteNetLossWeights:
    focal_gamma: float = 2.0
    tversky_alpha: float = 0.7
    tversky_beta: float = 0.3


class TwinLiteNetLoss(nn.Module):
    """``Loss_total = Loss_focal + Loss_tversky`` (eq. 3) for each head, summed over the two heads."""

    def __init__(self, weights: TwinLiteNetLossWeights = TwinLiteNetLossWeights()) -> None:
        super().__init__()
        self.weights = weights

    def head_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = self.weights
        return focal_loss(logits, target, w.focal_gamma) + tversky_loss(logits, target, w.tversky_alpha, w.tversky_beta)

    def forward(
        self, outputs: tuple[torch.Tensor, torch.Tensor], drivable: torch.Tensor, lane: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        drivable_loss = self.head_loss(outputs[0], drivable)
        lane_loss = self.head_loss(outputs[1], lane)
        return {"loss": drivable_loss + lane_loss, "drivable": drivable_loss.detach(), "lane": lane_loss.detach()}
