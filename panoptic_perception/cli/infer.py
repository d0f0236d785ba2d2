"""``infer``: a backend's outputs for images, folders or videos, written as files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigurationError
from .options import add_backend_options, build_backend, frame_size, runtime_options, set_threads

#: infer's folder of semantic maps for cityscapesscripts' pixel-level evaluation, which takes the one file
#: matching ``<city>_<seq>_<frame>*.png`` under CITYSCAPES_RESULTS (the flat folder holds several).
CITYSCAPES_SEMANTIC_DIR = "cityscapes_semantic"
#: infer's camera mount with ``--camera-info`` and no ``--mount``.
DEFAULT_MOUNT = "0,0,1.5,0,0,0"


def add_parser(commands, common: argparse.ArgumentParser) -> None:
    infer = commands.add_parser("infer", parents=[common], help="run a backend on images, folders or videos")
    add_backend_options(infer)
    infer.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or videos")
    infer.add_argument("--output", required=True, help="output folder")
    infer.add_argument("--input-size", type=frame_size, help="network input WxH (default from the weights)")
    infer.add_argument("--camera-info", metavar="YAML", help="the camera's calibration (camera_calibration format): also "
                       "write NAME_ground.png, the drivable area on the ground seen from above (README, Ground plane)")
    infer.add_argument("--mount", metavar="X,Y,Z,ROLL,PITCH,YAW",
                       help=f"with --camera-info: the camera's mount on the vehicle (metres, radians; default {DEFAULT_MOUNT}: "
                            "1.5 m up, level)")
    infer.add_argument("--plain", action="store_true", help="run the network as trained, without inference optimisations")
    infer.add_argument("--class-ids", choices=("label", "train"), default="label",
                       help="Cityscapes class ids in NAME_semantic.png and panoptic.json: label ids (what cityscapesscripts' "
                            "evaluation reads) or train ids 0-18, 255 not evaluated (e.g. for ground truth of "
                            "createPanopticImgs --use-train-id)")
    infer.set_defaults(func=cmd_infer)


def write_frame_files(folder: Path, images: dict[str, np.ndarray], record_name: str, record: dict) -> None:
    """Write each image of ``images`` (file names relative to ``folder``) and ``record`` as JSON to
    ``folder / record_name``: all of them, or none.

    Raises OSError (a full disk, a folder that cannot be written; OpenCV reports a failed write only by
    its return value) or cv2.error; the files already written for this frame are removed first, so that
    a failed frame leaves no partial outputs beside the others.
    """
    written: list[Path] = []
    try:
        for name, image in images.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append(path)
            if not cv2.imwrite(str(path), image):
                raise OSError(f"cannot write {path}")
        path = folder / record_name
        written.append(path)
        path.write_text(json.dumps(record, indent=2))
    except Exception:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def cmd_infer(args: argparse.Namespace) -> int:
    """Per frame NAME (an image's stem; a Cityscapes image ``<city>_<seq>_<frame>_leftImg8bit.png`` is
    NAME = ``<city>_<seq>_<frame>``, the id Cityscapes' tools match), what the backend produces:
    ``NAME_drivable.png`` / ``NAME_lane.png`` (0/255), ``NAME_semantic.png`` (class ids: ``--class-ids``),
    ``NAME_semantic_color.png``, ``NAME_panoptic.png`` (COCO / Cityscapes panoptic PNG), ``NAME_overlay.jpg``,
    with ``--camera-info`` ``NAME_ground.png`` (:func:`~panoptic_perception.core.ground.grid_image`)
    and ``NAME.json``; for Cityscapes images also ``cityscapes_semantic/NAME.png`` (label ids, for
    ``csEvalPixelLevelSemanticLabeling``). Then ``summary.json`` and ``panoptic.json`` (``image_id`` NAME)."""
    from ..core.failures import FrameFailures
    from ..core.io import FrameSource, cityscapes_id
    from ..core.labels import CITYSCAPES, CITYSCAPES_TRAIN_IDS
    from ..core.visualize import colorize_semantic, draw_overlay
    from ..data.cityscapes import panoptic_to_png
    from ..evaluation.loop import run_frames

    if args.mount is not None and not args.camera_info:
        raise ConfigurationError("--mount places the camera's frames on the ground, which needs its --camera-info YAML")
    set_threads(args)
    frames = FrameSource(args.inputs)
    backend = build_backend(args, args.backend, args.weights, fast=not args.plain,
                            **({"input_size": args.input_size} if args.input_size else {}),
                            **runtime_options(args, args.runtime))
    cityscapes_classes = backend.label_map == CITYSCAPES
    if args.class_ids == "train" and not cityscapes_classes:
        raise ConfigurationError(f"--class-ids train: train ids are those of the Cityscapes classes; {args.backend} "
                                 f"outputs {backend.label_map.name} classes")
    if cityscapes_classes:
        frames.check_cityscapes_ids()  # before any output: its evaluation takes one file per Cityscapes frame
    projection = None
    if args.camera_info:  # checked before any output
        from ..core.ground import GroundGrid, GroundProjection, parse_mount, read_camera_calibration

        projection = GroundProjection(read_camera_calibration(args.camera_info), parse_mount(args.mount or DEFAULT_MOUNT),
                                      GroundGrid())
    ground_warnings: set[str] = set()
    # Label ids are the backend's own class ids; train ids through the table (255: not evaluated).
    class_ids = CITYSCAPES_TRAIN_IDS if args.class_ids == "train" else np.arange(256, dtype=np.uint8)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    info = backend.describe()
    failures, panoptic_annotations = FrameFailures(), []

    def write(frame, result, stage) -> None:
        stage.name = "output"
        name, images = frame.name, {}
        if result.drivable_mask is not None:
            images[f"{name}_drivable.png"] = result.drivable_mask * 255
        if result.lane_mask is not None:
            images[f"{name}_lane.png"] = result.lane_mask * 255
        if result.semantic is not None:
            images[f"{name}_semantic.png"] = class_ids[result.semantic]
            images[f"{name}_semantic_color.png"] = colorize_semantic(result.semantic, backend.label_map)
            if cityscapes_classes and cityscapes_id(frame.source) is not None:
                images[f"{CITYSCAPES_SEMANTIC_DIR}/{name}.png"] = result.semantic
        annotation = None
        if result.panoptic is not None:
            images[f"{name}_panoptic.png"], segments_info = panoptic_to_png(result.panoptic, result.segments)
            for segment in segments_info:
                segment["category_id"] = int(class_ids[segment["category_id"]])
            annotation = {"image_id": name, "file_name": f"{name}_panoptic.png", "segments_info": segments_info}
        images[f"{name}_overlay.jpg"] = draw_overlay(frame.image, result, backend.label_map)
        if projection is not None:
            from ..core.ground import CalibrationError, grid_image, result_occupancy

            try:
                grid = result_occupancy(projection, result, backend.label_map)
            except CalibrationError as error:  # this frame's image outputs go on; say it once
                if str(error) not in ground_warnings:
                    ground_warnings.add(str(error))
                    print(f"no ground output: {error}", file=sys.stderr)
                grid = None
            if grid is not None:
                images[f"{name}_ground.png"] = grid_image(grid)
        record = {
            "source": frame.source,
            "image_size": list(result.image_size),
            **info,
            "timings": result.timings.to_dict(),
            "detections": result.detections.to_list() if result.detections is not None else None,
            "drivable_pixels": int(result.drivable_mask.sum()) if result.drivable_mask is not None else None,
            "lane_pixels": int(result.lane_mask.sum()) if result.lane_mask is not None else None,
        }
        stage.name = "writing"
        write_frame_files(output, images, f"{name}.json", record)
        if annotation is not None:  # only frames whose files were all written
            panoptic_annotations.append(annotation)

    # Untimed: each frame's record holds its own timings, the first call's included.
    processed = run_frames(backend, frames, failures, on_result=write, timed=False, progress=not args.quiet,
                           description="infer", total=len(frames))
    summary = {**info, "class_ids": args.class_ids, "processed": processed, "failed": failures.to_list(),
               "output": str(output)}
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    if panoptic_annotations:  # the COCO / Cityscapes panoptic format, e.g. for cityscapesscripts' evaluation
        categories = [{"id": int(class_ids[c.id]), "name": c.name, "isthing": int(c.is_thing)} for c in backend.label_map.classes]
        (output / "panoptic.json").write_text(json.dumps({"annotations": panoptic_annotations, "categories": categories}))
    print(f"{processed} frames written to {output}"
          + (f", {len(failures)} skipped (listed in {output / 'summary.json'})" if failures else ""))
    return 1 if failures else 0
