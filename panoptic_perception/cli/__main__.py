"""``python -m panoptic_perception.cli``: the ``panoptic-perception`` command."""

import sys

from . import main

sys.exit(main())
