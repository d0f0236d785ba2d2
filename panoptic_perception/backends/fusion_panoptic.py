"""The ``fusion_panoptic`` backend: semantic, instance and panoptic output of the fusion scheme for
semantic and instance-level segmentation (paper 002; the network: :mod:`panoptic_perception.models.fusion_panoptic`).

§IV Output fusion
    :func:`panoptic_perception.core.semantic_instance_fusion.fuse` (or Kirillov et al.'s heuristic, a config
    option) on the semantic map (the class logits bilinearly interpolated to the input image, argmax) and
    the detections' masks pasted at the input resolution.

Weights of other frameworks (:mod:`panoptic_perception.backends.rcnn_weights`): a torchvision Mask R-CNN
state dict or a Detectron2 Mask R-CNN checkpoint (its ``.pkl``) loads as ``weights`` directly (e.g. the
COCO weights of either). Its predictor keeps its classes (``detector_classes: coco91`` / ``coco80``;
detections of COCO classes without a Cityscapes counterpart are dropped, riders come out as persons; a
Detectron2 checkpoint also sets Detectron2's conventions: ``stride_in_1x1``, ``roi_aligned``,
``roi_sampling_ratio: 0``, ``round_anchors: false``) and the network has no semantic head
(``semantic_head: false``): the backend
then publishes detections and instance masks, as a panoptic image of the detected things only (every other
pixel void, placed by Kirillov et al.'s rule: by score, whole masks), and no semantic map; its
capabilities say so, so the node opens no ``~/semantic`` topic, and a warning says how to get the rest.
A random semantic head never feeds an output.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..core.labels import CITYSCAPES
from ..core.postprocess import class_maps
from ..core.preprocess import Geometry, ResizeMode, normalize
from ..core.semantic_instance_fusion import FusionConfig, InstanceSegmentation, fuse
from ..core.types import Capability, PerceptionResult
from ..data.synthetic.fusion_benchmark import benchmark_fusion
from ..models.fusion_panoptic import DenseOutputs, FusionPanopticConfig, FusionPanopticNetwork
from ..nn.roi_heads import paste_masks_in_boxes
from .base import Backend, Thresholds
from .rcnn_weights import (
    cityscapes_ids_of_rows,
    from_detectron2,
    from_torchvision,
    is_detectron2_rcnn,
    is_torchvision_mask_rcnn,
)
from .registry import register_backend
from .weights import Checkpoint


@register_backend("fusion_panoptic")
class FusionPanopticBackend(Backend):
    """Semantic, instance and panoptic segmentation with the paper's fusion (detections from the fused
    instances).

    Pre-processing: resize to the network size (a multiple of 32), RGB, ImageNet mean / std. Post-
    processing per image: class logits bilinearly to the input size, argmax → Cityscapes label ids;
    detections with a score at least the score threshold (box head NMS at the IoU threshold, at most
    ``max_detections``), their 28x28 masks pasted at the input resolution and cut at the mask threshold;
    then :func:`~panoptic_perception.core.semantic_instance_fusion.fuse` (the paper's or Kirillov's heuristic).
    With the paper's fusion the semantic output is the fused one (§IV); with Kirillov's baseline it is
    the semantic head's own (the baseline only builds the panoptic image), so evaluating both
    (``--variant fusion=paper --variant fusion=kirillov``) shows what the fusion adds to each output.
    ``fast=True`` folds the ResNet's BatchNorms into its convolutions. :meth:`forward` is the fixed-graph
    part (:meth:`FusionPanopticNetwork.dense`), the one ONNX Runtime and TensorRT run; :meth:`finish` keeps
    the data-dependent rest in torch (proposals, RoIAlign, box and mask heads, their NMS).

    Without a semantic head (``semantic_head: false``, weights converted from a torchvision or Detectron2
    Mask R-CNN):
    capabilities detection and panoptic only; the panoptic image holds the detected things, placed by
    Kirillov et al.'s rule (by score, whole masks) on an all-void background; no semantic map.
    """

    capabilities = frozenset({Capability.DETECTION, Capability.SEMANTIC, Capability.PANOPTIC})
    config_type = FusionPanopticConfig
    label_map = CITYSCAPES
    resize_mode = ResizeMode.RESIZE
    default_thresholds = Thresholds(score=0.5, iou=0.5, max_detections=100, mask=0.5)
    bundled_weights = "fusion_panoptic_synthetic.pth"
    dropped_instances: int = 0  # instances fusion dropped beyond 999 of one class, over this backend's frames
    converts = frozenset({"Detectron2"})
    other_formats = ("fusion_panoptic also loads torchvision maskrcnn_resnet50_fpn state dicts and Detectron2 Mask "
                     "R-CNN R50/R101-FPN checkpoints, converting them: README, Checkpoint formats")

    def __init__(self, *args, **kwargs) -> None:
        """As :class:`~panoptic_perception.backends.base.Backend`; without a semantic head the capabilities
        lose the semantic map, and a warning says what is published and how to get the rest."""
        super().__init__(*args, **kwargs)
        if not self.config.semantic_head:
            self.capabilities = frozenset({Capability.DETECTION, Capability.PANOPTIC})
            origin = self.metadata.get("converted_from", "semantic_head=false")
            self.log.warning(
                "%s: these weights have no semantic head (%s): publishing detections and instance masks only (a "
                "panoptic image of the detected things, every other pixel void), no semantic map. For semantic and "
                "panoptic output, train the semantic head starting from these weights (init_weights in a training "
                "config).", self.name, origin)

    @classmethod
    def adapt_checkpoint(cls, checkpoint: Checkpoint, path: str) -> Checkpoint:
        """Detectron2 checkpoints (a ``.pkl``, or its names in a torch file) and torchvision Mask R-CNN state
        dicts convert (:mod:`~panoptic_perception.backends.rcnn_weights`); any other checkpoint is taken as it is."""
        if checkpoint.origin == "Detectron2" or (checkpoint.backend is None and is_detectron2_rcnn(checkpoint.state_dict)):
            return from_detectron2(checkpoint.state_dict, path)
        if checkpoint.backend is None and is_torchvision_mask_rcnn(checkpoint.state_dict):
            return from_torchvision(checkpoint.state_dict, path)
        return super().adapt_checkpoint(checkpoint, path)

    @classmethod
    def build_network(cls, config: FusionPanopticConfig) -> FusionPanopticNetwork:
        return FusionPanopticNetwork(config)

    def forward(self, batch: torch.Tensor) -> DenseOutputs | tuple:
        dense = self.network.dense(normalize(batch))
        # An exported graph returns tensors only: without a semantic head the (None) logits are left out.
        return dense if self.config.semantic_head else tuple(dense[1:])

    def finish(self, outputs: Sequence, batch: torch.Tensor):
        heads = self.network.roi_heads
        heads.nms_thresh, heads.detections_per_img = self.thresholds.iou, self.thresholds.max_detections
        dense = DenseOutputs(*outputs) if self.config.semantic_head else DenseOutputs(None, *outputs)
        shape = tuple(batch.shape[-2:])
        return dense.semantic_logits, self.network.detect(dense, [shape] * len(batch), shape)

    def postprocess(self, outputs, geometries: Sequence[Geometry]) -> list[PerceptionResult]:
        semantic_logits, detections = outputs
        t = self.thresholds
        if semantic_logits is None:  # instances only: whole masks by score on an all-void image
            method = "kirillov"
            semantic_maps = [np.zeros(geometry.source_size[::-1], np.uint8) for geometry in geometries]
        else:
            method = self.config.fusion
            semantic_maps = class_maps(semantic_logits, geometries, self.label_map)
        fusion = FusionConfig(method=method, min_area=self.config.min_area, score_threshold=t.score, mask_threshold=t.mask)
        results = []
        for semantic, detection, geometry in zip(semantic_maps, detections, geometries):
            instances = self._instances(detection, geometry, t.score, t.mask)
            fused = fuse(semantic, instances, self.label_map, fusion)
            if fused.dropped:
                self.dropped_instances += fused.dropped
                if self.dropped_instances == fused.dropped:  # the first time: then only counted
                    self.log.warning("fusion_panoptic: %d instances of a class beyond the panoptic format's 999 "
                                     "(label divisor 1000) dropped, the smallest first; dropped_instances counts them",
                                     fused.dropped)
            if semantic_logits is None:
                semantic = None
            elif method == "paper":
                semantic = fused.semantic  # the baseline refines nothing
            results.append(PerceptionResult(geometry.source_size, self.name, detections=fused.detections,
                                            semantic=semantic, panoptic=fused.panoptic, segments=fused.segments))
        return results

    def extra_benchmarks(self) -> dict[str, float]:
        """The fusion alone at 1280x720 on a synthetic street scene with about 20 instances (§IV; the paper
        reports 3 ms on a GPU)."""
        return {f"fusion_{method}_1280x720_ms": benchmark_fusion((1280, 720), method=method) for method in ("paper", "kirillov")}

    def _instances(self, detection: dict, geometry: Geometry, score_threshold: float, mask_threshold: float) -> InstanceSegmentation:
        """Detections of a Cityscapes class at or above the score threshold with their masks pasted at the
        input resolution, each computed and kept only inside its box
        (:func:`~panoptic_perception.nn.roi_heads.paste_masks_in_boxes`): memory grows with the boxes' area,
        not with the detections times the image's. Predictor rows map to Cityscapes label ids by
        ``detector_classes``; rows without one (COCO's other classes) are dropped."""
        class_ids = cityscapes_ids_of_rows(self.config.detector_classes)[detection["labels"].cpu().numpy()]
        keep = (detection["scores"].cpu() >= score_threshold) & torch.from_numpy(class_ids > 0)
        boxes = torch.from_numpy(geometry.boxes_to_source(detection["boxes"].cpu()[keep].numpy()))
        width, height = geometry.source_size
        pasted = paste_masks_in_boxes(detection["masks"].cpu()[keep].float(), boxes, (height, width))
        return InstanceSegmentation(
            [(probabilities > mask_threshold).numpy() for _, probabilities in pasted],
            detection["scores"].cpu()[keep].numpy(), class_ids[keep.numpy()],
            windows=np.array([window for window, _ in pasted], np.int64).reshape(-1, 4), image_size=(height, width),
        )
