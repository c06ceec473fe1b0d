"""mIoU, accuracy, per-class and mean class accuracy against hand computations (uda.metrics)."""
import pytest
import torch

from uda.metrics import accuracy, class_accuracy, confusion, iou, mean_class_accuracy, miou, prediction_confusion

K = 4


def test_miou_equals_a_hand_computation_with_ignore_pixels_and_absent_classes():
    y = torch.tensor([[0, 0, 1], [255, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])  # the ignored pixel's prediction (2) must not count
    cm = confusion(pred, y, K)
    assert cm.sum() == 5 and cm[2, 2] == 1 and cm[2, 0] == 1 and cm[0, 1] == 1
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 1, FP 1 -> 1/2; class 2: TP 1, FN 1 -> 1/2; class 3 absent
    per_class = iou(cm)
    torch.testing.assert_close(per_class[:3], torch.tensor([1 / 3, 1 / 2, 1 / 2], dtype=torch.float64))
    assert torch.isnan(per_class[3])
    assert miou(cm) == pytest.approx(100 * (1 / 3 + 1 / 2 + 1 / 2) / 3)


def test_miou_accumulates_the_confusion_over_batches_not_the_per_batch_means():
    # batch A has only class 0 (all right); batch B classes 0 and 1 (one pixel of 1 predicted as 0)
    a = confusion(torch.tensor([0, 0]), torch.tensor([0, 0]), 2)
    b = confusion(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]), 2)
    # whole set: class 0 TP 3, FP 1 -> 3/4; class 1 TP 1, FN 1 -> 1/2; mIoU 62.5
    assert miou(a + b) == pytest.approx(62.5)
    assert miou(a + b) != pytest.approx((miou(a) + miou(b)) / 2)


def test_accuracy_per_class_and_mean_class_accuracy_count_over_all_batches():
    # labels 0, 0 | 1 (and class 2 without images); predictions 0, 1 | 1: 2 of 3 right overall, class 0 half,
    # class 1 all, mean class accuracy (50 + 100) / 2 over the classes with images
    batches = [(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 0])),
               (torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([1]))]
    cm = prediction_confusion(lambda x: x, batches, prepare=lambda x: x, num_classes=3)
    assert accuracy(cm) == pytest.approx(100 * 2 / 3)
    assert class_accuracy(cm, ("a", "b", "c")) == {"a": 50.0, "b": 100.0, "c": None}
    assert mean_class_accuracy(cm) == pytest.approx(75.0)
