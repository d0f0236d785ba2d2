"""``python -m panoptic_perception.data.synthetic``: the command line of :mod:`.cli`, pinned to one CPU core."""

from .cli import main, pin_to_one_core

if __name__ == "__main__":
    pin_to_one_core()
    raise SystemExit(main())
