"""Export: torch -> ONNX (with deploy rewrites) -> simplify -> lint -> verify against PyTorch -> write."""
