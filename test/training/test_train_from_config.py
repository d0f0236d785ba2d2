"""``train_from_config``'s command-line overrides (``panoptic-perception train --set KEY=VALUE``)."""

import pytest

from panoptic_perception.training import apply_overrides


def test_overrides_set_nested_keys_with_yaml_values():
    values = {"epochs": 12, "model": {"layer_connections": "cross", "width": 0.125}}
    apply_overrides(values, ["model.layer_connections=none", "epochs=3", "recipe.crop=[64, 32]", "optimizer={name: sgd}"])
    assert values == {"epochs": 3, "model": {"layer_connections": "none", "width": 0.125},
                      "recipe": {"crop": [64, 32]}, "optimizer": {"name": "sgd"}}


@pytest.mark.parametrize("pair, message", [("epochs", "KEY=VALUE"), ("=3", "KEY=VALUE"), ("epochs.x=1", "not a section")])
def test_bad_overrides_are_rejected_by_name(pair, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides({"epochs": 12}, [pair])
