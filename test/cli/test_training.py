"""``train`` (stages in order, packing) and ``convert-weights``."""

from __future__ import annotations

import torch

from panoptic_perception.cli import main


def test_train_runs_stages_in_order_and_packs_the_last_one(tmp_path, capsys):
    import yaml

    from panoptic_perception import create_backend
    from panoptic_perception.backends import read_checkpoint

    def stage(name: str, init: str | None) -> str:
        config = {"backend": "twinlitenet", "output_dir": str(tmp_path / name), "epochs": 1, "batch_size": 3,
                  "optimizer": {"name": "adam", "learning_rate": 1.0e-3}, "model": {"input_width": 64, "input_height": 48},
                  "data": {"train": [{"source": "synthetic", "count": 3, "width": 64, "height": 48}],
                           "val": [{"source": "synthetic", "count": 2, "first_seed": 1000000, "width": 64, "height": 48}]}}
        if init:
            config["init_weights"] = init
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    first, second = stage("one", None), stage("two", str(tmp_path / "one" / "best.pth"))
    packed = tmp_path / "shipped.pth"
    assert main(["-q", "train", "--config", first, "--config", second, "--set", "threads=1", "--pack", str(packed)]) == 0
    reports = capsys.readouterr().out
    assert reports.index(first) < reports.index(second), "the stages ran in the order given"
    trained = read_checkpoint(tmp_path / "two" / "best.pth")
    assert trained.metadata["train_config"]["init_weights"] == str(tmp_path / "one" / "best.pth")
    shipped = read_checkpoint(packed)
    assert shipped.metadata["stored_as"] == "float16" and shipped.config == trained.config
    for name, value in trained.state_dict.items():
        if value.is_floating_point():
            assert shipped.state_dict[name].dtype == torch.float16 and torch.equal(shipped.state_dict[name], value.half())
    assert create_backend("twinlitenet", str(packed)).input_size == (64, 48)


def test_train_refuses_too_little_data_and_initial_weights_that_do_not_fit(tmp_path, capsys, yolopv2_small_checkpoint):
    import yaml

    config = {"backend": "twinlitenet", "output_dir": str(tmp_path / "run"), "epochs": 1, "batch_size": 4,
              "optimizer": {"name": "adam", "learning_rate": 1.0e-3}, "model": {"input_width": 64, "input_height": 48},
              "data": {"train": [{"source": "synthetic", "count": 3, "width": 64, "height": 48}]}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["-q", "train", "--config", str(path), "--set", "threads=1"]) == 2
    assert "the training data has 3 samples, fewer than batch_size 4" in capsys.readouterr().err
    argv = ["-q", "train", "--config", str(path), "--set", "threads=1", "--set", "batch_size=3",
            "--set", f"init_weights={yolopv2_small_checkpoint[0]}"]
    assert main(argv) == 2
    assert "no tensor fits this twinlitenet model" in capsys.readouterr().err


def test_convert_weights_saves_a_torchvision_mask_rcnn_as_a_backend_checkpoint(tmp_path, capsys):
    from panoptic_perception import create_backend
    from panoptic_perception.backends import read_checkpoint
    from panoptic_perception.nn.mask_rcnn import MaskRCNN

    torch.manual_seed(0)
    source = MaskRCNN(91, width=0.25, norm_layer=torch.nn.BatchNorm2d, fpn_channels=32, representation_size=64,
                      mask_layers=(32,) * 4).state_dict()
    torch.save(source, tmp_path / "coco.pth")
    assert main(["convert-weights", str(tmp_path / "coco.pth"), str(tmp_path / "converted.pth")]) == 0
    assert capsys.readouterr().out.strip().endswith(
        "converted.pth: fusion_panoptic weights (torchvision Mask R-CNN (91 classes)); options: width=0.25, "
        "fpn_channels=32, representation_size=64, mask_channels=32, detector_classes=coco91, semantic_head=False")
    converted = read_checkpoint(tmp_path / "converted.pth")
    assert converted.backend == "fusion_panoptic" and converted.config["detector_classes"] == "coco91"
    assert converted.metadata["converted_from"] == "torchvision Mask R-CNN (91 classes)"
    counters = [k for k in source if k.endswith("num_batches_tracked")]
    assert sorted(converted.state_dict) == sorted(set(source) - set(counters))
    assert all(torch.equal(converted.state_dict[k], source[k]) for k in converted.state_dict)
    backend = create_backend("fusion_panoptic", str(tmp_path / "converted.pth"), fast=False)  # no options needed
    assert not backend.config.semantic_head and backend.network.roi_heads.num_classes == 91

    assert main(["convert-weights", str(tmp_path / "coco.pth"), str(tmp_path / "out.pth"), "--option", "detector_classes=coco80"]) == 2
    assert "mis-shaped keys" in capsys.readouterr().err


def test_convert_weights_saves_a_detectron2_pkl_with_its_conventions(tmp_path, capsys):
    from support import detectron2_model, write_detectron2_pkl

    from panoptic_perception.backends import read_checkpoint

    source = write_detectron2_pkl(tmp_path / "model_final.pkl", detectron2_model())
    assert main(["convert-weights", source, str(tmp_path / "converted.pth")]) == 0
    assert capsys.readouterr().out.strip().endswith(
        "(Detectron2 Mask R-CNN (80 classes)); options: width=0.25, fpn_channels=32, representation_size=64, "
        "mask_channels=16, detector_classes=coco80, semantic_head=False, stride_in_1x1=True, roi_aligned=True, "
        "roi_sampling_ratio=0, round_anchors=False")
    converted = read_checkpoint(tmp_path / "converted.pth")
    assert converted.origin is None and converted.backend == "fusion_panoptic" and converted.config["stride_in_1x1"]
