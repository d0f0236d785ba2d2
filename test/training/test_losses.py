"""The paper's losses on hand-computed values."""

import math

import numpy as np

import pytest
import torch

from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.training.losses import (TwinLiteNetLoss, class_weight_vector, focal_loss,
                                                semantic_cross_entropy, tversky_loss)


def logits_for(probabilities_of_class1: list[float]) -> torch.Tensor:
    """(1, 2, 1, N) logits whose softmax gives the listed class-1 probabilities."""
    p = torch.tensor(probabilities_of_class1, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))])[None, :, None, :]


def test_focal_loss_hand_computed():
    logits = logits_for([0.8, 0.3])
    target = torch.tensor([[[1, 0]]])
    # pixel 1: true class 1, p=0.8 → -(0.2^2) log 0.8 ; pixel 2: true class 0, p=0.7 → -(0.3^2) log 0.7
    expected = -(0.2**2 * math.log(0.8) + 0.3**2 * math.log(0.7)) / 2
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(expected, rel=1e-9)


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 2, 3, 4), torch.randint(0, 2, (2, 3, 4))
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), torch.nn.functional.cross_entropy(logits, target))


def test_tversky_loss_hand_computed():
    logits = logits_for([0.8, 0.3])
    target = torch.tensor([[[1, 0]]])
    # class 1: TP=0.8, FN=0.2, FP=0.3; class 0: TP=0.7, FN=0.3, FP=0.2
    alpha, beta, smooth = 0.7, 0.3, 1.0
    expected = (1 - (0.8 + smooth) / (0.8 + alpha * 0.2 + beta * 0.3 + smooth)) + (
        1 - (0.7 + smooth) / (0.7 + alpha * 0.3 + beta * 0.2 + smooth)
    )
    assert tversky_loss(logits, target, alpha, beta, smooth).item() == pytest.approx(expected, rel=1e-9)


def test_tversky_makes_a_missed_rare_positive_cost_more_than_a_false_alarm():
    def hard_logits(prediction: list[int]) -> torch.Tensor:
        p = torch.tensor(prediction, dtype=torch.float64) * 100.0
        return torch.stack([100.0 - p, p])[None, :, None, :]

    target = torch.tensor([[[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]]])
    miss = tversky_loss(hard_logits([1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), target, 0.7, 0.3, smooth=0.0)
    false_alarm = tversky_loss(hard_logits([1, 1, 1, 0, 0, 0, 0, 0, 0, 0]), target, 0.7, 0.3, smooth=0.0)
    # miss: class 1 TP=1 FN=1, class 0 TP=8 FP=1; false alarm: class 1 TP=2 FP=1, class 0 TP=7 FN=1
    assert miss.item() == pytest.approx((1 - 1 / 1.7) + (1 - 8 / 8.3))
    assert false_alarm.item() == pytest.approx((1 - 2 / 2.3) + (1 - 7 / 7.7))
    assert miss > false_alarm


def test_perfect_prediction_costs_almost_nothing():
    target = torch.tensor([[[1, 0, 1, 0]]])
    logits = torch.stack([(1 - target) * 20.0, target * 20.0], 1).double()
    losses = TwinLiteNetLoss()((logits, logits), target, target)
    assert losses["loss"].item() < 1e-6


def test_semantic_cross_entropy_averages_the_hardest_labelled_pixels():
    # four labelled pixels with per-pixel losses -log(p) for p = 0.9, 0.5, 0.2, 0.1, and one ignored pixel
    probs = torch.tensor([0.9, 0.5, 0.2, 0.1, 0.01])
    logits = torch.stack([probs.log(), (1 - probs).log()]).view(1, 2, 1, 5)
    target = torch.tensor([[[0, 0, 0, 0, 255]]])
    every = semantic_cross_entropy(logits, target, 255, 1.0)
    half = semantic_cross_entropy(logits, target, 255, 0.5)
    assert every.item() == pytest.approx(-np.log([0.9, 0.5, 0.2, 0.1]).mean(), rel=1e-5)
    assert half.item() == pytest.approx(-np.log([0.2, 0.1]).mean(), rel=1e-5)
    assert semantic_cross_entropy(logits, torch.full_like(target, 255), 255, 0.5).item() == 0.0
    with pytest.raises(ValueError, match="hard_pixel_fraction"):
        semantic_cross_entropy(logits, target, 255, 0.0)


def test_class_weights_scale_each_pixel_by_its_true_class_and_mining_ranks_the_weighted_losses():
    # pixels of class 0 with p = 0.5, 0.2 and of class 1 with p = 0.9, 0.6; class 1 weighs 10
    p_true = torch.tensor([0.5, 0.2, 0.9, 0.6])
    target = torch.tensor([[[0, 0, 1, 1]]])
    p_class0 = torch.where(target[0, 0] == 0, p_true, 1 - p_true)
    logits = torch.stack([p_class0.log(), (1 - p_class0).log()]).view(1, 2, 1, 4)
    weights = torch.tensor([1.0, 10.0])
    losses = -np.log([0.5, 0.2, 0.9, 0.6]) * np.array([1, 1, 10, 10])
    every = semantic_cross_entropy(logits, target, 255, 1.0, weights)
    assert every.item() == pytest.approx(losses.sum() / 22, rel=1e-5)
    # the two largest weighted losses are 10 * -log 0.6 = 5.11 and -log 0.2 = 1.61 (10 * -log 0.9 = 1.05 ranks
    # below), divided by their weights 10 + 1
    half = semantic_cross_entropy(logits, target, 255, 0.5, weights)
    assert half.item() == pytest.approx((losses[3] + losses[1]) / 11, rel=1e-5)


def test_class_weight_vector_by_name():
    vector = class_weight_vector(CITYSCAPES, {"pole": 4.0})
    assert vector.shape == (len(CITYSCAPES),)
    assert vector[list(CITYSCAPES.ids).index(17)] == 4.0 and vector.sum() == len(CITYSCAPES) + 3
    assert class_weight_vector(CITYSCAPES, {}) is None
    with pytest.raises(ValueError, match="no class 'lamp'"):
        class_weight_vector(CITYSCAPES, {"lamp": 2.0})
    with pytest.raises(ValueError, match="positive"):
        class_weight_vector(CITYSCAPES, {"pole": 0.0})
