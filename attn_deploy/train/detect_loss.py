"""The YOLOv8 detection loss: task-aligned assignment, CIoU + DFL box loss, BCE class loss.

Follows ``ultralytics/utils/loss.py`` ``v8DetectionLoss`` and ``BboxLoss`` (8.x), with its gains (box 7.5,
class 0.5, DFL 1.5) and its scaling (each term normalised by the sum of the target scores, the total times the
batch size). The head's raw outputs (box logits ``4 x 16`` DFL bins and class logits per anchor) are read
with forward hooks on the zoo's :class:`~attn_deploy.models.yolov8.Detect` branches, so the model itself is
unchanged and its decoded output stays what is exported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from attn_deploy.models.yolov8 import REG_MAX, STRIDES, YOLOv8
from attn_deploy.train.assigner import TaskAlignedAssigner
from attn_deploy.train.boxes import bbox2dist, ciou, dist2bbox

GAINS = {"box": 7.5, "cls": 0.5, "dfl": 1.5}


@dataclass
class HeadOutputs:
    """Raw head outputs of one forward pass: box logits ``(B, A, 64)``, class logits ``(B, A, nc)``, anchor
    points ``(A, 2)`` in grid units and their strides ``(A, 1)``."""

    box: torch.Tensor
    cls: torch.Tensor
    anchors: torch.Tensor
    strides: torch.Tensor


class HeadTap:
    """Forward hooks on a YOLOv8's Detect branches that keep the raw logits of the last forward pass."""

    def __init__(self, model: YOLOv8):
        detect = model.model[-1]
        self._box: list[torch.Tensor | None] = [None] * len(STRIDES)
        self._cls: list[torch.Tensor | None] = [None] * len(STRIDES)
        self._handles = []
        for i, (box, cls) in enumerate(zip(detect.cv2, detect.cv3, strict=True)):
            self._handles.append(box.register_forward_hook(self._keep(self._box, i)))
            self._handles.append(cls.register_forward_hook(self._keep(self._cls, i)))

    @staticmethod
    def _keep(store: list[torch.Tensor | None], i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            store[i] = output

        return hook

    def outputs(self) -> HeadOutputs:
        """The logits of the last forward pass, flattened over the three levels."""
        if any(t is None for t in self._box + self._cls):
            raise RuntimeError("HeadTap.outputs() before a forward pass")
        box = torch.cat([t.flatten(2) for t in self._box], 2).transpose(1, 2)  # type: ignore[union-attr]
        cls = torch.cat([t.flatten(2) for t in self._cls], 2).transpose(1, 2)  # type: ignore[union-attr]
        points, strides = [], []
        for t, stride in zip(self._box, STRIDES, strict=True):
            h, w = t.shape[2], t.shape[3]  # type: ignore[union-attr]
            sy = torch.arange(h, dtype=box.dtype, device=box.device) + 0.5
            sx = torch.arange(w, dtype=box.dtype, device=box.device) + 0.5
            gy, gx = torch.meshgrid(sy, sx, indexing="ij")
            points.append(torch.stack((gx, gy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), float(stride), dtype=box.dtype, device=box.device))
        return HeadOutputs(box, cls, torch.cat(points), torch.cat(strides))

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


class DetectionLoss:
    """``loss(model, images, targets)`` -> (total for ``backward``, detached ``[box, cls, dfl]``); or
    ``loss.of_last_forward(targets, batch)`` after the caller ran the model itself.

    ``targets``: ``(N, 6)`` rows ``image_index, class, x1, y1, x2, y2`` in input pixels.
    """

    def __init__(self, model: YOLOv8, num_classes: int):
        self.tap = HeadTap(model)
        self.nc = num_classes
        self.assigner = TaskAlignedAssigner(num_classes)
        self.proj = torch.arange(REG_MAX, dtype=torch.float32)

    def __call__(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model(images)
        return self.of_last_forward(targets, images.shape[0])

    def of_last_forward(self, targets: torch.Tensor, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of the model's last forward pass (read by the tap) on a batch of ``bs`` images against
        ``targets``: for a caller that already ran the model (no second forward pass)."""
        head = self.tap.outputs()
        gt_labels, gt_bboxes, mask_gt = _pad_targets(targets, bs)
        # distances in grid units: softmax over the bins, expectation (Ultralytics' bbox_decode)
        dist = head.box.view(bs, -1, 4, REG_MAX).softmax(3).matmul(self.proj.to(head.box.dtype))
        pred_bboxes = dist2bbox(dist, head.anchors)
        target_bboxes, target_scores, fg = self.assigner(
            head.cls.detach().sigmoid(),
            (pred_bboxes.detach() * head.strides).type(gt_bboxes.dtype),
            head.anchors * head.strides,
            gt_labels,
            gt_bboxes,
            mask_gt,
        )
        score_sum = target_scores.sum().clamp(min=1)
        loss_cls = F.binary_cross_entropy_with_logits(
            head.cls, target_scores.to(head.cls.dtype), reduction="none"
        )
        loss_cls = loss_cls.sum() / score_sum
        loss_box = loss_dfl = head.box.new_zeros(())
        if fg.any():
            target_bboxes = target_bboxes / head.strides
            weight = target_scores.sum(-1)[fg].unsqueeze(-1)
            iou = ciou(pred_bboxes[fg], target_bboxes[fg])
            loss_box = ((1.0 - iou) * weight).sum() / score_sum
            target_ltrb = bbox2dist(head.anchors, target_bboxes, REG_MAX - 1)
            loss_dfl = (
                _dfl(head.box.view(bs, -1, 4, REG_MAX)[fg], target_ltrb[fg]) * weight
            ).sum() / score_sum
        parts = torch.stack((loss_box * GAINS["box"], loss_cls * GAINS["cls"], loss_dfl * GAINS["dfl"]))
        return parts.sum() * bs, parts.detach()


def _dfl(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss (Li et al., 2020): cross-entropy to the two bins around each target distance,
    weighted by closeness; ``pred (n, 4, REG_MAX)``, ``target (n, 4)`` -> ``(n, 1)``."""
    left = target.long()
    right = left + 1
    w_left = right - target
    w_right = 1 - w_left
    logits = pred.reshape(-1, REG_MAX)
    loss = F.cross_entropy(logits, left.view(-1), reduction="none").view(left.shape) * w_left
    loss = loss + F.cross_entropy(logits, right.view(-1), reduction="none").view(left.shape) * w_right
    return loss.mean(-1, keepdim=True)


def _pad_targets(targets: torch.Tensor, bs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, 6)`` target rows -> labels ``(B, M, 1)``, boxes ``(B, M, 4)``, mask ``(B, M, 1)`` (M the most boxes
    of one image)."""
    index = targets[:, 0].long()
    counts = torch.bincount(index, minlength=bs)
    m = int(counts.max()) if len(targets) else 0
    labels = targets.new_zeros((bs, m, 1))
    boxes = targets.new_zeros((bs, m, 4))
    mask = targets.new_zeros((bs, m, 1))
    for b in range(bs):
        rows = targets[index == b]
        labels[b, : len(rows), 0] = rows[:, 1]
        boxes[b, : len(rows)] = rows[:, 2:6]
        mask[b, : len(rows)] = 1
    return labels, boxes, mask
