"""BatchNorm calibration: give randomly initialised weights realistic activation statistics.

Freshly initialised BatchNorm layers hold running mean 0 / variance 1, which matches no real
activation, so eval-mode outputs of an untrained network are badly scaled. Re-estimating those
statistics on a few natural-looking images makes every BN output roughly zero-mean and unit-variance
on real data, the way a trained network's are, which later FP16/INT8 range checks rely on.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 4) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``images`` (already normalised model input).

    Statistics are reset and averaged cumulatively (``momentum=None``) over batches of ``batch_size``;
    only the BatchNorm layers run in train mode, everything else stays in eval mode. The model is
    returned in eval mode with the BatchNorm momenta restored.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for batch in images.split(batch_size):
            model(batch)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
            m.eval()
    return model
