"""Loading weights: weights-only, clear errors, no silent random weights."""

import logging
import pickle

import numpy as np
import pytest
import torch

from panoptic_perception.backends import WeightsError, create_backend, read_checkpoint, save_checkpoint
from panoptic_perception.models.twinlitenet import TwinLiteNet


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        create_backend("twinlitenet", str(tmp_path / "nope.pth"))


def test_non_checkpoint_file_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read .* as a weights-only PyTorch checkpoint: not a file torch.save"):
        read_checkpoint(path)


def test_truncated_checkpoint_names_the_error(tmp_path):
    whole, cut = tmp_path / "whole.pth", tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(1000)}, whole)
    cut.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(WeightsError, match=r"cannot read .*cut.pth as a weights-only PyTorch checkpoint: \w+Error"):
        read_checkpoint(cut)


class Payload:
    """An arbitrary object: unpickling it could run code, so loading must refuse it."""


def test_pickled_objects_are_refused_in_one_clean_line_naming_them(tmp_path):
    path = tmp_path / "pickle.pth"
    torch.save({"model": Payload()}, path)
    with pytest.raises(WeightsError) as error:
        read_checkpoint(path)
    assert str(error.value) == (f"cannot read {path} as a weights-only PyTorch checkpoint: it refers to the Python "
                                f"object {__name__}.Payload, which a weights-only load does not create")


def test_mismatched_checkpoint_names_missing_unexpected_and_misshaped_keys(tmp_path):
    state = TwinLiteNet().state_dict()
    del state["encoder.level1.conv.weight"]
    state["encoder.extra.weight"] = torch.zeros(1)
    state["up_1_1.deconv.weight"] = torch.zeros(32, 8, 2, 2)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as error:
        create_backend("twinlitenet", str(path))
    message = str(error.value)
    assert "1 missing keys: encoder.level1.conv.weight" in message
    assert "1 unexpected keys: encoder.extra.weight" in message
    assert "up_1_1.deconv.weight (checkpoint (32, 8, 2, 2), model (32, 16, 2, 2))" in message


def test_dataparallel_prefix_and_project_format_load(tmp_path):
    torch.manual_seed(3)
    net = TwinLiteNet()
    plain = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, plain)
    project = save_checkpoint(tmp_path / "own.pth", "twinlitenet", net.state_dict(), {"input_width": 320, "input_height": 184}, {"note": 1})
    for path, size in ((plain, (640, 360)), (project, (320, 184))):
        backend = create_backend("twinlitenet", str(path), fast=False)
        assert backend.input_size == size
        assert torch.equal(backend.network.encoder.level1.conv.weight, net.encoder.level1.conv.weight)
        assert backend.weights_info.source == "file" and len(backend.weights_info.sha256) == 64


def test_checkpoint_of_another_backend_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "other.pth", "yolopv2", TwinLiteNet().state_dict(), {})
    with pytest.raises(WeightsError, match="holds weights of backend 'yolopv2'"):
        create_backend("twinlitenet", str(path))


def test_random_weights_only_when_asked_and_loudly(monkeypatch, caplog):
    from panoptic_perception.backends.twinlitenet import TwinLiteNetBackend

    monkeypatch.setattr(TwinLiteNetBackend, "bundled_weights", None)
    with pytest.raises(WeightsError, match="needs weights"):
        create_backend("twinlitenet")
    with caplog.at_level(logging.WARNING):
        backend = create_backend("twinlitenet", allow_random_weights=True)
    assert backend.weights_info.source == "random"
    assert "RANDOM WEIGHTS" in caplog.text


@pytest.mark.parametrize("name, real_weights", [("twinlitenet", "the official TwinLiteNet pretrained/best.pth"),
                                                 ("yolopv2", "the official yolopv2.pt"),
                                                 ("cyclenet", "a checkpoint trained on Cityscapes")])
def test_bundled_weights_warn_and_name_what_real_cameras_need(name, real_weights, caplog):
    with caplog.at_level(logging.WARNING):
        create_backend(name)
    assert "trained on synthetic scenes only" in caplog.text and real_weights in caplog.text


def test_unknown_config_option_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "own.pth", "twinlitenet", TwinLiteNet().state_dict(), {})
    with pytest.raises(ValueError, match="unknown TwinLiteNetConfig options: width_mult"):
        create_backend("twinlitenet", str(path), width_mult=2)


def test_an_architecture_option_over_weights_trained_without_it_is_named(tmp_path):
    from panoptic_perception.models.yolopv2 import YOLOPv2

    trained = {"width": 0.25, "depth": 0.33}
    path = save_checkpoint(tmp_path / "small.pth", "yolopv2", YOLOPv2(**trained).state_dict(), trained)
    with pytest.raises(WeightsError, match=r"mis-shaped keys.*The options width=0\.5 differ from the config these "
                                           r"weights were trained with \(width=0\.25\)"):
        create_backend("yolopv2", str(path), width=0.5)
    with pytest.raises(ValueError, match="option width must be float, got no value"):
        create_backend("yolopv2", str(path), width=None)


def test_batchnorm_counters_load_into_frozen_batchnorm_as_torch_strict_loading_allows(tmp_path):
    """A checkpoint trained with nn.BatchNorm2d carries ``num_batches_tracked``; FrozenBatchNorm2d ignores it."""
    from panoptic_perception.models.fusion_panoptic import FusionPanopticConfig, FusionPanopticNetwork

    small = dict(width=0.25, fpn_channels=32, representation_size=64, mask_channels=32, semantic_channels=32,
                 group_norm_groups=8, input_width=256, input_height=160)
    torch.manual_seed(0)
    trained = FusionPanopticNetwork(FusionPanopticConfig(norm="batch_norm", **small))
    state = trained.state_dict()
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(counters) == 53  # one per BatchNorm of a ResNet-50
    frozen = FusionPanopticNetwork(FusionPanopticConfig(**small))
    frozen.load_state_dict(state, strict=True)  # torch's own strict loading accepts them
    path = save_checkpoint(tmp_path / "bn.pth", "fusion_panoptic", state, small)
    backend = create_backend("fusion_panoptic", str(path), fast=False)
    loaded = backend.network.state_dict()
    assert not any(k.endswith("num_batches_tracked") for k in loaded)
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)
    assert torch.equal(loaded["backbone.body.bn1.running_var"], trained.backbone.body.bn1.running_var)

    # Other keys are still refused, and a refused checkpoint leaves the module untouched.
    from panoptic_perception.backends.weights import load_state_dict_strictly

    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    bad = {k: torch.zeros_like(v) for k, v in state.items()}
    bad["backbone.body.bn1.momentum"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"1 unexpected keys: backbone\.body\.bn1\.momentum$"):
        load_state_dict_strictly(frozen, bad, "bad.pth")
    assert all(torch.equal(frozen.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_detectron2_pkl_files_are_read_as_numpy_arrays(tmp_path, protocol):
    """Of any protocol: 0 and 1 (Python 2's) have no header, but are pickles all the same."""
    arrays = {"backbone.bottom_up.stem.conv1.weight": np.arange(6, dtype=np.float32).reshape(1, 2, 3),
              "roi_heads.box_predictor.cls_score.bias": np.array([0.5, -1.0], np.float64), "counter": np.int64(7)}
    path = tmp_path / "model_final.pkl"
    path.write_bytes(pickle.dumps({"model": arrays, "__author__": "Detectron2 Model Zoo", "matching_heuristics": False},
                                  protocol=protocol))
    checkpoint = read_checkpoint(path)
    assert checkpoint.origin == "Detectron2" and checkpoint.backend is None
    assert checkpoint.metadata == {"author": "Detectron2 Model Zoo"}
    assert sorted(checkpoint.state_dict) == sorted(arrays)
    for name, array in arrays.items():
        assert torch.equal(checkpoint.state_dict[name], torch.from_numpy(np.asarray(array))), name


@pytest.mark.parametrize("payload, message", [
    ({"res2_0_branch2a_w": "array"}, r"is a Detectron / Caffe2 checkpoint \(numpy blobs with Caffe2 names\), which is not "
                                     r"supported: Detectron2 \.pkl files and torch\.save checkpoints are$"),
    ({"blobs": {"conv1_w": "array"}}, r"is a Detectron / Caffe2 checkpoint"),
    ([1, 2], r"a pickle of a list, neither a torch\.save checkpoint nor a Detectron2 one"),
    ("array", r"a pickle of a ndarray, neither a torch\.save checkpoint nor a Detectron2 one"),
    ({"model": {"conv1_w": "text"}}, r"a pickle in Detectron2's layout whose model holds entries that are not numeric "
                                     r"arrays: conv1_w$"),
])
@pytest.mark.parametrize("protocol", [0, 2])
def test_other_pickles_are_refused_saying_what_they_are(tmp_path, payload, message, protocol):
    def arrays(value):  # "array" stands for a numpy array
        if isinstance(value, dict):
            return {k: arrays(v) for k, v in value.items()}
        return np.zeros(2, np.float32) if value == "array" else value

    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps(arrays(payload), protocol=protocol))
    with pytest.raises(WeightsError, match=message):
        read_checkpoint(path)
