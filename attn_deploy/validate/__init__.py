"""Validation: compare a deployed graph's outputs with PyTorch's."""
