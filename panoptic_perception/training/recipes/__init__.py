"""Training recipes, one per backend (see :class:`~panoptic_perception.training.engine.Recipe`)."""

from __future__ import annotations

from .cross_cooperative import CrossCooperativeRecipe
from .cyclenet import CycleNetRecipe
from .fusion_panoptic import FusionPanopticRecipe

RECIPES = {recipe.backend: recipe for recipe in (CrossCooperativeRecipe, CycleNetRecipe, FusionPanopticRecipe)}

__all__ = ["RECIPES"]
