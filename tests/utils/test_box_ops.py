import torch

from panoptic_detr.utils.box_ops import (
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    masks_to_boxes,
)


def test_conversions_roundtrip():
    b = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.2, 0.0, 0.1]])
    xyxy = box_cxcywh_to_xyxy(b)
    assert torch.allclose(xyxy[0], torch.tensor([0.4, 0.3, 0.6, 0.7]))
    assert torch.allclose(box_xyxy_to_cxcywh(xyxy), b)
    assert box_cxcywh_to_xyxy(torch.zeros(0, 4)).shape == (0, 4)


def test_iou_and_giou_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 5.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    iou, union = box_iou(a, b)
    assert torch.allclose(iou, torch.tensor([[1 / 7, 0.0, 1.0]]))
    assert torch.allclose(union, torch.tensor([[7.0, 5.0, 4.0]]))
    g = generalized_box_iou(a, b)
    # hulls: 9, 10, 4
    assert torch.allclose(g, torch.tensor([[1 / 7 - 2 / 9, 0 - 5 / 10, 1.0]]))
    ge = generalized_box_iou(a.expand(3, 4), b, elementwise=True)
    assert torch.allclose(ge, g[0])


def test_giou_rejects_degenerate():
    import pytest

    with pytest.raises(ValueError):
        generalized_box_iou(torch.tensor([[1.0, 0, 0, 1]]), torch.tensor([[0.0, 0, 1, 1]]))


def test_masks_to_boxes():
    m = torch.zeros(3, 6, 8, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    m[1, 5, 7] = True
    boxes = masks_to_boxes(m)
    assert boxes.tolist() == [[2, 1, 5, 3], [7, 5, 8, 6], [0, 0, 0, 0]]
    assert masks_to_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)
