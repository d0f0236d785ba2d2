"""The paper's losses on hand-computed values."""

import math

import pytest
import torch

from panoptic_perception.training.losses import TwinLiteNetLoss, focal_loss, tversky_loss


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


def test_tversky_weights_false_negatives_with_alpha():
    # Same errors, once as a miss (FN of class 1), once as a false alarm (FP of class 1).
    miss = tversky_loss(logits_for([0.1, 0.1]), torch.tensor([[[1, 0]]]), 0.7, 0.3, smooth=0.0)
    false_alarm = tversky_loss(logits_for([0.9, 0.9]), torch.tensor([[[1, 0]]]), 0.7, 0.3, smooth=0.0)
    assert miss.item() == pytest.approx(false_alarm.item())  # symmetric over both classes...
    one_class_miss = tversky_loss(logits_for([0.1]), torch.tensor([[[1]]]), 0.7, 0.3, smooth=0.0)
    one_class_alarm = tversky_loss(logits_for([0.9]), torch.tensor([[[0]]]), 0.7, 0.3, smooth=0.0)
    assert one_class_miss > one_class_alarm  # ...but a missed positive costs more than a false one


def test_perfect_prediction_costs_almost_nothing():
    target = torch.tensor([[[1, 0, 1, 0]]])
    logits = torch.stack([(1 - target) * 20.0, target * 20.0], 1).double()
    losses = TwinLiteNetLoss()((logits, logits), target, target)
    assert losses["loss"].item() < 1e-6
