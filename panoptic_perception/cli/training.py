"""``train`` (the stages of a recipe), and the weights tools: ``pack-weights`` and ``convert-weights``."""

from __future__ import annotations

import argparse
import json

from ..backends import WeightsError
from ..backends.base import parse_options
from ..errors import ConfigurationError
from ..factory import create_backend
from .options import add_option_argument


def add_parsers(commands, common: argparse.ArgumentParser) -> None:
    train = commands.add_parser("train", parents=[common], help="train a backend from a YAML config")
    train.add_argument("--config", action="append", required=True,
                       help="YAML config; repeat it to train the stages of a recipe in order")
    train.add_argument("--output-dir", help="override the config's output_dir (one --config only)")
    train.add_argument("--pack", metavar="FILE",
                       help="then pack the last stage's best.pth into FILE as float16, as the bundled weights are shipped")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, dotted keys, YAML values (repeatable; e.g. model.layer_connections=none; "
                            "a number indexes a list: data.train.0.count=8)")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pth")
    train.set_defaults(func=cmd_train)

    pack = commands.add_parser("pack-weights", parents=[common], help="re-save a checkpoint for shipping (e.g. float16)")
    pack.add_argument("input", help="a backend checkpoint (e.g. runs/NAME/best.pth)")
    pack.add_argument("output")
    pack.add_argument("--half", action="store_true", help="store floating-point tensors as float16 (loaded as float32)")
    pack.set_defaults(func=cmd_pack_weights)

    convert = commands.add_parser("convert-weights", parents=[common],
                                  help="save another framework's checkpoint (torchvision Mask R-CNN, Detectron2 .pkl) as a backend checkpoint")
    convert.add_argument("input", help="a checkpoint the backend's --weights accepts")
    convert.add_argument("output")
    convert.add_argument("--backend", default="fusion_panoptic", help="backend name (default fusion_panoptic)")
    add_option_argument(convert, "backend option overriding what the conversion found, e.g. batch_norm_eps=1e-5")
    convert.set_defaults(func=cmd_convert_weights)


def cmd_train(args: argparse.Namespace) -> int:
    """Train each ``--config`` in order (the stages of a recipe: each stage's ``init_weights`` names the
    previous stage's ``best.pth``), then with ``--pack`` ship the last stage's ``best.pth`` as float16."""
    from ..training import train_from_config

    if len(args.config) > 1 and args.output_dir:
        raise ConfigurationError("--output-dir applies to one --config; each stage's config names its own output_dir")
    for config in args.config:
        summary = train_from_config(config, resume=args.resume, output_dir=args.output_dir, progress=not args.quiet,
                                    overrides=args.set)
        best = next(({k: v for k, v in r.items() if k.startswith("val_")} for r in reversed(summary["history"])
                     if any(k.startswith("val_") for k in r)), {})
        if summary.get("rank", 0) == 0:  # under torchrun, one report
            print(json.dumps({"config": config} | {k: v for k, v in summary.items() if k not in ("history", "rank")}
                             | {"last_validation": best}, indent=2))
    if args.pack and summary.get("rank", 0) == 0:
        _pack(summary["best_checkpoint"], args.pack, half=True)
    return 0


def cmd_pack_weights(args: argparse.Namespace) -> int:
    _pack(args.input, args.output, args.half)
    return 0


def _pack(source: str, output: str, half: bool) -> None:
    """Re-save a backend checkpoint for shipping: the same weights (float16 if ``half``), config and metadata."""
    from ..backends import read_checkpoint, save_checkpoint

    checkpoint = read_checkpoint(source)
    if checkpoint.backend is None:
        raise WeightsError(f"{source} is not a checkpoint of this package's backends (no backend name)")
    state = {k: v.half() if half and v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
    metadata = {**checkpoint.metadata, "stored_as": "float16" if half else "as trained"}
    path = save_checkpoint(output, checkpoint.backend, state, checkpoint.config, metadata)
    print(f"{path}: {path.stat().st_size / 1e6:.2f} MB ({checkpoint.backend})")


def cmd_convert_weights(args: argparse.Namespace) -> int:
    """Load INPUT as the backend loads ``--weights`` (converting another framework's checkpoint: see
    :meth:`~panoptic_perception.backends.base.Backend.adapt_checkpoint`), and save it in this package's
    format, with the backend's name and the config the conversion found, so running it or training from it
    (``init_weights``) needs no options."""
    import dataclasses

    from ..backends import save_checkpoint

    backend = create_backend(args.backend, args.input, "cpu", fast=False, **parse_options(args.option))
    config = dataclasses.asdict(backend.config)
    defaults = dataclasses.asdict(backend.config_type())
    metadata = {**backend.metadata, "converted_from_sha256": backend.weights_info.sha256}
    path = save_checkpoint(args.output, backend.name, backend.network.state_dict(), config, metadata)
    changed = ", ".join(f"{k}={v}" for k, v in config.items() if v != defaults[k]) or "the defaults"
    origin = backend.metadata.get("converted_from", "already in this package's format")
    print(f"{path}: {backend.name} weights ({origin}); options: {changed}")
    return 0
