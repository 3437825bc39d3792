"""Attention distillation: trade a costly attention module for a cheap one and keep the accuracy.

A frozen teacher (``resnet50-ema``) and a student of the same architecture with another attention
(``resnet50-eca``) that starts from the teacher's non-attention weights; the student's attention maps are pulled
toward the teacher's at every attention site (MSE) while its outputs are pulled toward the teacher's (KL), from
unlabeled images::

    from attn_deploy import create_model
    from attn_deploy.distill import distill

    teacher = create_model("resnet50-ema", weights="teacher.pt")
    student = create_model("resnet50-eca", num_classes=teacher.spec.num_classes)
    result = distill(teacher, student, "synthetic:scenes", steps=300, out="runs/eca")

``sites`` defines the maps per family, ``losses`` the loss terms and their defaults, ``loop`` the training,
``evaluate`` the agreement with the teacher, ``report`` the Markdown / JSON / PNG report with the exported
student and the ORT latency of both.
"""

from __future__ import annotations

from attn_deploy.distill.loop import DistillResult, distill
from attn_deploy.distill.losses import LossWeights
from attn_deploy.distill.sites import SitePair, attention_sites, pair_sites
from attn_deploy.distill.sources import ImageSource, open_source, yolo_source
from attn_deploy.distill.student import init_student

__all__ = [
    "DistillResult",
    "ImageSource",
    "LossWeights",
    "SitePair",
    "attention_sites",
    "distill",
    "init_student",
    "open_source",
    "pair_sites",
    "yolo_source",
]
