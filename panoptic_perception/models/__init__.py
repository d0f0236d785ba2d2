"""The papers' networks, one module per paper: ``torch.nn.Module`` s and their configs (dataclasses),
with no pre- or post-processing. The backends in :mod:`panoptic_perception.backends` wrap them for
inference (pre-processing, post-processing, label maps, weights); training builds them from here."""
