"""PyTorch eager runner (the reference)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from attn_deploy.backends.base import RunnerBase


class TorchRunner(RunnerBase):
    """Run an ``nn.Module`` in eval mode under ``torch.inference_mode`` on CPU (or ``device``)."""

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        input_names: Sequence[str] = ("images",),
        output_names: Sequence[str] | None = None,
        device: str = "cpu",
    ) -> None:
        self.model = model.eval()
        self._inputs = list(input_names)
        self._outputs = list(output_names) if output_names else None
        self.device = torch.device(device)

    @property
    def input_names(self) -> list[str]:
        """Input names, in the model's argument order."""
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        """Output names (``output0``... until the first run when not given)."""
        return self._outputs or ["output0"]

    def activate(self) -> None:
        """Move the model to the runner's device."""
        self.model.to(self.device)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; outputs are flattened to a list of tensors in order."""
        args = [torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device) for n in self._inputs]
        with torch.inference_mode():
            out = self.model(*args)
        tensors = flatten_outputs(out)
        if self._outputs is None:
            self._outputs = [f"output{i}" for i in range(len(tensors))]
        return {n: t.detach().cpu().numpy() for n, t in zip(self._outputs, tensors, strict=True)}


def flatten_outputs(out: object) -> list[torch.Tensor]:
    """A model's output (tensor, or nested tuple/list/dict of tensors) as a flat list, in ONNX output order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    raise TypeError(f"model returned {type(out).__name__}; expected tensors")
