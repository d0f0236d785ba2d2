"""Training recipes, one per backend (see :class:`~panoptic_perception.training.engine.Recipe`)."""

from __future__ import annotations

from .cross_cooperative import CrossCooperativeRecipe
from .cyclenet import CycleNetRecipe
from .fusion_panoptic import FusionPanopticRecipe
from .twinlitenet import TwinLiteNetRecipe
from .yolopv2 import YOLOPv2Recipe

RECIPES = {recipe.backend: recipe for recipe in (CrossCooperativeRecipe, CycleNetRecipe, FusionPanopticRecipe,
                                                 TwinLiteNetRecipe, YOLOPv2Recipe)}

__all__ = ["RECIPES"]
