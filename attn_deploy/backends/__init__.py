"""Runners: one interface for PyTorch, ONNX Runtime and TensorRT, so comparison and timing code never care
which backend they hold (after Polygraphy's runners)."""

from attn_deploy.backends.base import Runner

__all__ = ["Runner"]
