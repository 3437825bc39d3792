"""The task-aligned assigner of TOOD (Feng et al., 2021) as YOLOv8 uses it.

Follows ``ultralytics/utils/tal.py`` ``TaskAlignedAssigner`` (8.x): for each ground-truth box, the anchors whose
centre lies inside it are scored by ``score^alpha * CIoU^beta`` (``score`` the predicted probability of the box's
class); the ``topk`` best are its positives; an anchor claimed by several boxes goes to the one it overlaps most.
Targets: the box, the one-hot class scaled by the normalised alignment metric (so the class target of a
positive is its IoU-aware quality, at most the best IoU of its box's positives).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from attn_deploy.train.boxes import ciou


class TaskAlignedAssigner:
    """Assign ground-truth boxes to anchors (``topk`` 10, ``alpha`` 0.5, ``beta`` 6.0 as in YOLOv8)."""

    def __init__(
        self, num_classes: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9
    ):
        self.num_classes, self.topk, self.alpha, self.beta, self.eps = num_classes, topk, alpha, beta, eps

    @torch.no_grad()
    def __call__(
        self,
        pd_scores: torch.Tensor,
        pd_bboxes: torch.Tensor,
        anchors: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_bboxes: torch.Tensor,
        mask_gt: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores ``(B, A, nc)`` (probabilities), boxes ``(B, A, 4)`` and anchor points ``(A, 2)`` in pixels,
        ground truth padded to ``M`` boxes: labels ``(B, M, 1)``, boxes ``(B, M, 4)``, mask ``(B, M, 1)``.

        Returns target boxes ``(B, A, 4)``, target scores ``(B, A, nc)`` and the foreground mask ``(B, A)``.
        """
        bs, n_boxes = gt_bboxes.shape[:2]
        if n_boxes == 0:
            return (
                torch.zeros_like(pd_bboxes),
                torch.zeros_like(pd_scores),
                torch.zeros(pd_scores.shape[:2], dtype=torch.bool, device=pd_scores.device),
            )
        in_gts = _anchors_in_boxes(anchors, gt_bboxes)
        align, overlaps = self._metrics(pd_scores, pd_bboxes, gt_labels, gt_bboxes, (in_gts * mask_gt).bool())
        top = self._topk(align, mask_gt.expand(-1, -1, self.topk).bool())
        mask_pos = top * in_gts * mask_gt
        gt_index, fg_mask, mask_pos = _highest_overlaps(mask_pos, overlaps, n_boxes)

        batch = torch.arange(bs, device=gt_labels.device)[:, None]
        flat = gt_index + batch * n_boxes
        target_labels = gt_labels.long().flatten()[flat].clamp_(0)
        target_bboxes = gt_bboxes.view(-1, 4)[flat]
        target_scores = F.one_hot(target_labels, self.num_classes)
        target_scores = torch.where(fg_mask[..., None] > 0, target_scores, 0)

        align = align * mask_pos
        pos_align = align.amax(-1, keepdim=True)
        pos_overlaps = (overlaps * mask_pos).amax(-1, keepdim=True)
        norm_align = (align * pos_overlaps / (pos_align + self.eps)).amax(-2).unsqueeze(-1)
        return target_bboxes, target_scores * norm_align, fg_mask.bool()

    def _metrics(
        self,
        pd_scores: torch.Tensor,
        pd_bboxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_bboxes: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Alignment metric and CIoU ``(B, M, A)``, zero outside ``mask``."""
        bs, n_boxes = gt_bboxes.shape[:2]
        na = pd_bboxes.shape[-2]
        overlaps = torch.zeros((bs, n_boxes, na), dtype=pd_bboxes.dtype, device=pd_bboxes.device)
        scores = torch.zeros_like(overlaps)
        batch = torch.arange(bs, device=gt_labels.device).view(-1, 1).expand(-1, n_boxes)
        scores[mask] = pd_scores[batch, :, gt_labels.squeeze(-1).long()][mask]
        pd = pd_bboxes.unsqueeze(1).expand(-1, n_boxes, -1, -1)[mask]
        gt = gt_bboxes.unsqueeze(2).expand(-1, -1, na, -1)[mask]
        overlaps[mask] = ciou(gt, pd).squeeze(-1).clamp_(0)
        return scores.pow(self.alpha) * overlaps.pow(self.beta), overlaps

    def _topk(self, metrics: torch.Tensor, topk_mask: torch.Tensor) -> torch.Tensor:
        """1 at the ``topk`` best anchors of each valid box (ties spread by ``scatter_add`` counts, as published)."""
        _, idx = torch.topk(metrics, self.topk, dim=-1, largest=True)
        idx.masked_fill_(~topk_mask, 0)
        count = torch.zeros(metrics.shape, dtype=torch.int8, device=metrics.device)
        ones = torch.ones_like(idx[:, :, :1], dtype=torch.int8)
        for k in range(self.topk):
            count.scatter_add_(-1, idx[:, :, k : k + 1], ones)
        count.masked_fill_(count > 1, 0)
        return count.to(metrics.dtype)


def _anchors_in_boxes(anchors: torch.Tensor, gt_bboxes: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """``(B, M, A)``: 1 where anchor point ``a`` lies strictly inside box ``m``."""
    bs, n_boxes, _ = gt_bboxes.shape
    lt, rb = gt_bboxes.view(-1, 1, 4).chunk(2, 2)
    deltas = torch.cat((anchors[None] - lt, rb - anchors[None]), dim=2).view(
        bs, n_boxes, anchors.shape[0], -1
    )
    return deltas.amin(3).gt_(eps)


def _highest_overlaps(
    mask_pos: torch.Tensor, overlaps: torch.Tensor, n_boxes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An anchor positive for several boxes keeps only the box it overlaps most: (box index, fg, mask)."""
    fg = mask_pos.sum(-2)
    if fg.max() > 1:
        multi = (fg.unsqueeze(1) > 1).expand(-1, n_boxes, -1)
        best = torch.zeros_like(mask_pos).scatter_(1, overlaps.argmax(1).unsqueeze(1), 1)
        mask_pos = torch.where(multi, best, mask_pos).float()
        fg = mask_pos.sum(-2)
    return mask_pos.argmax(-2), fg, mask_pos
