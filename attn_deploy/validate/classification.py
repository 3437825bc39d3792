"""Classifier agreement: does the candidate pick the same top-1 class as the reference?"""

from __future__ import annotations

import numpy as np


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of rows of ``(N, classes)`` logits whose argmax is the same in both."""
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(
            f"expected two (N, classes) arrays of one shape, got {reference.shape} and {candidate.shape}"
        )
    if not len(reference):
        return 1.0
    return float(np.mean(reference.argmax(1) == candidate.argmax(1)))
