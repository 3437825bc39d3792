"""Precision is decided in the ONNX graph (TensorRT 11 builds strongly typed networks only).

* :mod:`.fp16`: FP16 conversion with a mixed-precision policy for attention blocks (:mod:`.policy`);
* :mod:`.int8`: Q/DQ INT8, calibrated (:mod:`.calibration`: data readers and the calibration cache);
* :mod:`.apply`: the export step that applies a config's precision and checks the result against PyTorch.
"""
