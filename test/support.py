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


#: A narrow ResNet-50-FPN Mask R-CNN in Detectron2's layout: stem width, FPN, box-head and mask-head channels.
D2_WIDTH, D2_FPN, D2_FC, D2_MASK = 16, 32, 64, 16


def detectron2_model(classes: int = 80, seed: int = 0) -> dict:
    """A Mask R-CNN R50-FPN state dict with Detectron2's names and shapes (``detectron2/modeling``:
    ``backbone.bottom_up`` a ResNet of ``stem.conv1`` and ``res2``..``res5`` blocks of ``conv1``..``conv3``
    and ``shortcut``, each a Conv2d with its ``norm``; ``backbone.fpn_lateral{2..5}`` / ``fpn_output{2..5}``;
    ``StandardRPNHead`` ``conv`` / ``objectness_logits`` / ``anchor_deltas``; ``FastRCNNConvFCHead``
    ``fc1`` / ``fc2``; ``FastRCNNOutputLayers`` ``cls_score`` (classes + 1, background last) / ``bbox_pred``
    (4 x classes); ``MaskRCNNConvUpsampleHead`` ``mask_fcn1``..``4`` / ``deconv`` / ``predictor`` (classes)),
    random values, BatchNorm statistics included."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}

    def tensor(name, *shape):
        state[name] = torch.randn(*shape, generator=generator) * 0.1

    def conv(name, out_channels, in_channels, size, bias=False):
        tensor(f"{name}.weight", out_channels, in_channels, size, size)
        if bias:
            tensor(f"{name}.bias", out_channels)

    def norm(name, channels):
        for part in ("weight", "bias", "running_mean"):
            tensor(f"{name}.norm.{part}", channels)
        state[f"{name}.norm.running_var"] = torch.rand(channels, generator=generator) + 0.5

    conv("backbone.bottom_up.stem.conv1", D2_WIDTH, 3, 7)
    norm("backbone.bottom_up.stem.conv1", D2_WIDTH)
    in_channels, stage_channels = D2_WIDTH, []
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        planes = D2_WIDTH * 2 ** (stage - 2)
        for block in range(blocks):
            prefix = f"backbone.bottom_up.res{stage}.{block}"
            if block == 0:
                conv(f"{prefix}.shortcut", planes * 4, in_channels, 1)
                norm(f"{prefix}.shortcut", planes * 4)
            for index, (out_channels, channels, size) in enumerate(
                    ((planes, in_channels if block == 0 else planes * 4, 1), (planes, planes, 3), (planes * 4, planes, 1)), 1):
                conv(f"{prefix}.conv{index}", out_channels, channels, size)
                norm(f"{prefix}.conv{index}", out_channels)
        in_channels = planes * 4
        stage_channels.append(in_channels)
    for stage, channels in zip(range(2, 6), stage_channels):
        conv(f"backbone.fpn_lateral{stage}", D2_FPN, channels, 1, bias=True)
        conv(f"backbone.fpn_output{stage}", D2_FPN, D2_FPN, 3, bias=True)
    conv("proposal_generator.rpn_head.conv", D2_FPN, D2_FPN, 3, bias=True)
    conv("proposal_generator.rpn_head.objectness_logits", 3, D2_FPN, 1, bias=True)
    conv("proposal_generator.rpn_head.anchor_deltas", 12, D2_FPN, 1, bias=True)
    for name, out_features, in_features in (("roi_heads.box_head.fc1", D2_FC, D2_FPN * 49),
                                            ("roi_heads.box_head.fc2", D2_FC, D2_FC),
                                            ("roi_heads.box_predictor.cls_score", classes + 1, D2_FC),
                                            ("roi_heads.box_predictor.bbox_pred", 4 * classes, D2_FC)):
        tensor(f"{name}.weight", out_features, in_features)
        tensor(f"{name}.bias", out_features)
    for index in range(1, 5):
        conv(f"roi_heads.mask_head.mask_fcn{index}", D2_MASK, D2_FPN if index == 1 else D2_MASK, 3, bias=True)
    tensor("roi_heads.mask_head.deconv.weight", D2_MASK, D2_MASK, 2, 2)  # ConvTranspose2d: (in, out, k, k)
    tensor("roi_heads.mask_head.deconv.bias", D2_MASK)
    conv("roi_heads.mask_head.predictor", classes, D2_MASK, 1, bias=True)
    return state


def write_detectron2_pkl(path, model: dict, protocol: int = 2, **extra) -> str:
    """Detectron2's model zoo format: a pickle of numpy arrays under "model" (protocol 2 names numpy.core)."""
    import pickle

    payload = {"model": {k: v.numpy() for k, v in model.items()}, "__author__": "Detectron2 Model Zoo",
               "matching_heuristics": False, **extra}
    with open(path, "wb") as file:
        pickle.dump(payload, file, protocol=protocol)
    return str(path)


def fail_on_frame(monkeypatch, bad_image, calls: list | None = None) -> None:
    """TwinLiteNetBackend raises ``RuntimeError("backend exploded")`` on ``bad_image`` (a BGR array) and runs
    every other image; each call appends to ``calls`` when given."""
    import numpy as np

    from panoptic_perception.backends.twinlitenet import TwinLiteNetBackend

    call = TwinLiteNetBackend.__call__

    def failing(self, image):
        if calls is not None:
            calls.append(1)
        if np.array_equal(image, bad_image):
            raise RuntimeError("backend exploded")
        return call(self, image)

    monkeypatch.setattr(TwinLiteNetBackend, "__call__", failing)


def copy_bag_cutting(bag, output, cut: set[tuple[str, int]]):
    """Copy ``bag`` to ``output`` (MCAP) with the messages ``cut`` — (topic, index of the message on that
    topic) — truncated to 40 bytes: CDR that no longer deserializes."""
    from rosbags.highlevel import AnyReader

    from panoptic_perception.ros.bags import BagWriter

    seen: dict[str, int] = {}
    with AnyReader([bag]) as reader, BagWriter(output) as writer:
        for connection, log_time, raw in reader.messages():
            index = seen[connection.topic] = seen.get(connection.topic, -1) + 1
            raw = bytes(raw)[:40] if (connection.topic, index) in cut else bytes(raw)
            writer.write(connection.topic, log_time, raw=raw, msgtype=connection.msgtype)
    return output


def flat_tensors(outputs) -> list:
    """The tensors of a network's outputs (tensors in tuples, lists, named tuples and dicts), in order."""
    import torch

    if isinstance(outputs, torch.Tensor):
        return [outputs]
    values = outputs.values() if isinstance(outputs, dict) else outputs
    return [tensor for value in values for tensor in flat_tensors(value)]


def assert_reparameterizing_twice_equals_once(network, *inputs, tolerance: float = 1e-4, run=None):
    """The re-parameterised copy of ``network`` (eval mode) computes what ``network`` computes (within
    ``tolerance`` of each output's largest value), and re-parameterising it again changes nothing: no change
    reported, the same state dict, the same outputs bit for bit. ``run(model, *inputs)`` gives the outputs
    compared (default: ``model(*inputs)``). Returns the first pass's changes."""
    import torch

    from panoptic_perception.nn.reparameterize import reparameterize

    network.eval()
    once, changes = reparameterize(network)
    twice, changes_again = reparameterize(once)
    assert changes and not changes_again, (changes, changes_again)
    state, state_again = once.state_dict(), twice.state_dict()
    assert list(state) == list(state_again) and all(torch.equal(state[k], state_again[k]) for k in state)
    with torch.no_grad():
        expected, folded, folded_again = (flat_tensors(run(model, *inputs) if run else model(*inputs))
                                          for model in (network, once, twice))
    assert len(expected) == len(folded) == len(folded_again) > 0
    for reference, value, value_again in zip(expected, folded, folded_again):
        assert torch.equal(value, value_again)
        scale = reference.abs().max().item()
        torch.testing.assert_close(value, reference, rtol=tolerance, atol=tolerance * scale)
    return changes


#: A narrow CycleNet (a ResNet-101 of width 0.125, narrow heads), for functional tests.
CYCLENET_SMALL = dict(width=0.125, rates=(1, 2, 3), aspp_bottleneck=16, aspp_growth=8, high_channels=16,
                      low_channels=8, decoder_channels=16, aux_channels=8, input_width=128, input_height=72)


def small_cyclenet(seed: int = 0):
    """A :data:`CYCLENET_SMALL` network seeded by ``seed``, with non-trivial norms, in eval mode."""
    import torch

    from panoptic_perception.models.cyclenet import CycleNetConfig, CycleNetNetwork

    torch.manual_seed(seed)
    return randomize_norms_(CycleNetNetwork(CycleNetConfig(**CYCLENET_SMALL)), seed)


#: A narrow cross cooperative pair, for functional tests.
CROSS_COOPERATIVE_SMALL = dict(top_width=0.125, bottom_width=0.125, head_channels=16, reduced_channels=8,
                               input_width=96, input_height=64)


def small_cross_cooperative(seed: int = 0, **options):
    """A :data:`CROSS_COOPERATIVE_SMALL` network with ``options``, seeded by ``seed``, with non-trivial
    norms, in eval mode."""
    import torch

    from panoptic_perception.models.cross_cooperative import CrossCooperativeConfig, CrossCooperativeNetwork

    torch.manual_seed(seed)
    return randomize_norms_(CrossCooperativeNetwork(CrossCooperativeConfig(**{**CROSS_COOPERATIVE_SMALL, **options})),
                            seed)


#: A narrow fusion network, as the bundled weights use, for functional tests.
FUSION_PANOPTIC_SMALL = dict(width=0.25, norm="batch_norm", fpn_channels=32, representation_size=64, mask_channels=32,
                             semantic_channels=32, group_norm_groups=8, input_width=256, input_height=160)
