"""GPU timing for PyTorch: CUDA events around the device work, apart from end-to-end time; CUDA graphs.

Status: written against the documented PyTorch CUDA API; not yet run on a GPU (the development machines
have none). Without CUDA every GPU backend is skipped with :func:`cuda_skip_reason`.

* End-to-end (measured by the timing loop): host batch -> device copy -> forward -> device -> host copy.
* GPU compute (returned by the call): ``torch.cuda.Event(enable_timing=True)`` recorded around the forward
  only, read after the stream synchronises (``Event.elapsed_time``, milliseconds).
* CUDA graphs (optional): warm up on a side stream, capture one forward on static input/output buffers with
  ``torch.cuda.graph``, then each call copies the batch into the static input and replays
  (docs.pytorch.org/docs/stable/notes/cuda.html#cuda-graphs, "torch.cuda.graph").
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from attn_deploy.backends.torch_runner import flatten_outputs

GRAPH_WARMUP_ITERS = 3


def cuda_skip_reason() -> str | None:
    """Why GPU timing cannot run here (``None`` when a CUDA GPU is usable)."""
    if not torch.cuda.is_available():
        return "no CUDA GPU visible (torch.cuda.is_available() is False): GPU timing skipped"
    return None


class TorchCudaCall:
    """One timed PyTorch forward on the GPU; ``__call__`` returns the GPU compute time in ms."""

    def __init__(self, model: nn.Module, sample: torch.Tensor, cuda_graph: bool = False) -> None:
        self.model = copy.deepcopy(model).eval().to("cuda")  # the CPU backends keep the original
        self.host = sample.numpy()
        self.static_input = sample.to("cuda")
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_output: list[torch.Tensor] = []
        if cuda_graph:
            self._capture()

    @torch.inference_mode()
    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_ITERS):
                self.model(self.static_input)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_output = flatten_outputs(self.model(self.static_input))

    @torch.inference_mode()
    def __call__(self) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.static_input.copy_(torch.from_numpy(np.ascontiguousarray(self.host)), non_blocking=False)
        start.record()
        if self.graph is not None:
            self.graph.replay()
            outputs = self.static_output
        else:
            outputs = flatten_outputs(self.model(self.static_input))
        end.record()
        for out in outputs:
            out.cpu()
        end.synchronize()
        return float(start.elapsed_time(end))
