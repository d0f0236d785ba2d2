"""``python -m panoptic_perception.training --config FILE [--resume] [--output-dir DIR]``: the CLI's
``train`` command as a module, so that PyTorch's launcher can start it once per device:

    torchrun --nproc-per-node 4 -m panoptic_perception.training --config panoptic_perception/training/configs/cyclenet_synthetic.yaml
"""

from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
