import numpy as np
import pytest
import torch

from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.core.postprocess import class_maps
from panoptic_perception.core.preprocess import Geometry


@pytest.mark.parametrize("channels_last", [False, True])
def test_class_maps_are_label_ids_of_the_argmax_of_interpolated_logits(channels_last):
    torch.manual_seed(0)
    logits = torch.randn(2, len(CITYSCAPES), 11, 20)
    if channels_last:  # what the fast path's networks return
        logits = logits.contiguous(memory_format=torch.channels_last)
    g = Geometry.resize((83, 47), (20, 11))
    upsampled = torch.nn.functional.interpolate(logits, size=(47, 83), mode="bilinear", align_corners=False)
    ids = np.asarray(CITYSCAPES.ids, np.uint8)
    maps = class_maps(logits, [g, g], CITYSCAPES)
    for image, labels in enumerate(maps):
        assert labels.shape == (47, 83) and labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, ids[upsampled[image].argmax(0).numpy()])


def test_class_maps_give_a_tie_to_the_first_class():
    logits = torch.zeros(1, len(CITYSCAPES), 4, 4)
    logits[0, 5] = logits[0, 3] = 1.0
    labels = class_maps(logits, [Geometry.resize((4, 4), (4, 4))], CITYSCAPES)[0]
    assert (labels == CITYSCAPES.ids[3]).all()


def test_class_maps_reject_logits_of_another_label_map():
    with pytest.raises(ValueError, match="18 logit channels for a label map of 19 classes"):
        class_maps(torch.zeros(1, 18, 4, 4), [Geometry.resize((4, 4), (4, 4))], CITYSCAPES)
