"""Helpers shared by tests (importable: `test/` is on the test path)."""

from __future__ import annotations


def randomize_norms_(model, seed: int = 0):
    """Non-trivial statistics and affine terms in every BatchNorm2d and FrozenBatchNorm2d (drawn from a
    generator seeded by ``seed``), so that parity and folding tests see them; returns the model in eval
    mode."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d) or type(module).__name__ == "FrozenBatchNorm2d":
                for name, low, high in (("weight", 0.5, 1.5), ("bias", -0.2, 0.2), ("running_mean", -0.2, 0.2),
                                        ("running_var", 0.5, 1.5)):
                    tensor = getattr(module, name)
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return model.eval()


def randomized_yolopv2(network, seed: int = 0):
    """Non-trivial BatchNorm statistics and implicit terms, and detection biases that produce detections
    (objectness 1.0, first class 2.0): untrained but well-defined weights for plumbing tests."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.8, 1.2)
                module.bias.uniform_(-0.1, 0.1)
        for add, mul in zip(network.detect.implicit_add, network.detect.implicit_mul):
            add.normal_(0, 0.05)
            mul.normal_(1, 0.05)
        for conv in network.detect.convs:
            bias = conv.bias.view(3, -1)
            bias[:, 4] = 1.0
            bias[:, 5] = 2.0
    return network.eval()
