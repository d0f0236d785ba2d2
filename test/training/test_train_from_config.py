"""``train_from_config``: command-line overrides (``panoptic-perception train --set KEY=VALUE``) and the
bundled weights' configs in ``panoptic_perception/training/configs/`` and their training log."""

import re
from pathlib import Path

import pytest
import yaml

from panoptic_perception.training import apply_overrides, load_train_config
from panoptic_perception.training.config import from_dict
from panoptic_perception.training.engine import TrainConfig


def test_overrides_set_nested_keys_with_yaml_values():
    values = {"epochs": 12, "model": {"layer_connections": "cross", "width": 0.125}}
    apply_overrides(values, ["model.layer_connections=none", "epochs=3", "recipe.crop=[64, 32]", "optimizer={name: sgd}"])
    assert values == {"epochs": 3, "model": {"layer_connections": "none", "width": 0.125},
                      "recipe": {"crop": [64, 32]}, "optimizer": {"name": "sgd"}}


def test_overrides_index_lists_by_number():
    values = {"data": {"train": [{"source": "synthetic", "count": 1200}], "val": [{"count": 60}]}}
    apply_overrides(values, ["data.train.0.count=4", "data.val.0={count: 2}"])
    assert values == {"data": {"train": [{"source": "synthetic", "count": 4}], "val": [{"count": 2}]}}


@pytest.mark.parametrize("pair, message", [("epochs", "KEY=VALUE"), ("=3", "KEY=VALUE"), ("epochs.x=1", "not a section"),
                                           ("data.train.1.count=4", "must index a list of 1"),
                                           ("data.train.first.count=4", "must index a list of 1")])
def test_bad_overrides_are_rejected_by_name(pair, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides({"epochs": 12, "data": {"train": [{"count": 1200}]}}, [pair])


@pytest.mark.parametrize("pair, message", [("epochs=abc", "epochs must be int, got 'abc'"),
                                           ("optimizer.learning_rate=true", "optimizer.learning_rate must be float, got True"),
                                           ("data.train.0.count=1.5", "data.train\\[0\\].count must be int, got 1.5")])
def test_values_of_the_wrong_type_are_rejected_by_name(pair, message):
    def config():
        return {"backend": "twinlitenet", "output_dir": "unused", "data": {"train": [{"count": 4}]}}

    with pytest.raises(ValueError, match=f"^x.yaml: {message}"):
        from_dict(TrainConfig, apply_overrides(config(), [pair]), "x.yaml: ")
    from_dict(TrainConfig, apply_overrides(config(), ["optimizer.learning_rate=1", "init_weights=null"]))  # int for float, None where optional


CONFIG_DIR = Path(__file__).resolve().parents[2] / "panoptic_perception" / "training" / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
TRAINING_LOG = CONFIG_DIR / "training-log.md"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_bundled_weights_config_parses_into_its_recipe(path):
    config, _ = load_train_config(path)  # unknown keys and recipe options raise
    stage = re.fullmatch(r"(.+)_stage(\d+)", path.stem)
    if stage:  # stage N starts from the best checkpoint of stage N - 1, as the training log says
        base, number = stage.group(1), int(stage.group(2))
        previous = path.with_name(f"{base}.yaml" if number == 2 else f"{base}_stage{number - 1}.yaml")
        assert config.init_weights == f"{yaml.safe_load(previous.read_text())['output_dir']}/best.pth"


def test_configs_are_plain_data_pointing_at_their_section_of_the_training_log():
    sections = re.findall(r"^### (\S+\.yaml)$", TRAINING_LOG.read_text(), re.MULTILINE)
    assert sorted(sections) == [path.name for path in CONFIGS], "one section per config, no other"
    for path in CONFIGS:
        first, *data = path.read_text().splitlines()
        assert first == f"# Recipe notes and measurements: training-log.md in this folder, section {path.name}."
        assert not any("#" in line for line in data), f"{path.name}: notes belong in the training log"
