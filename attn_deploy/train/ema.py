"""Exponential moving average of a model's weights, as Ultralytics' ``ModelEMA`` keeps it.

The decay ramps up as ``decay * (1 - exp(-updates / tau))`` (``ultralytics/utils/torch_utils.py``), so early
in training the average follows the weights closely; floating-point buffers (BatchNorm statistics) are averaged
too. Evaluate and export :attr:`ModelEMA.model`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """A frozen copy of ``model`` in eval mode whose floats follow ``model`` after each :meth:`update`."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current weights in."""
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        source = model.state_dict()
        for name, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach(), alpha=1 - d)
            else:
                value.copy_(source[name])
