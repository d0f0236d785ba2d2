"""The toy recipe with GroupNorm and every pixel labelled (nothing depends on the batch's split), 6 SGD
steps: ``python ddp_toy.py OUTPUT`` (or :func:`main`) trains in one process, ``torchrun --nproc-per-node 2
ddp_toy.py OUTPUT`` in two."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_recipe import ToyRecipe, toy_config  # noqa: E402

from panoptic_perception.training.engine import train  # noqa: E402


def main(output: Path) -> None:
    config = toy_config(output, epochs=2, batch_size=4)
    train(config, ToyRecipe(config, norm="group", scale=(1.0, 1.0)), progress=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
