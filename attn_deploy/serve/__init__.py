"""Serving: a KServe v2 / Triton HTTP server over ONNX Runtime, and a Triton model-repository writer.

server.V2Server / server.BackgroundServer (HTTP front), model_pool (sessions, options), batcher (dynamic
micro-batching), protocol (v2 JSON + binary tensors), metrics (Prometheus, Triton names), model_config
and triton_repo (config.pbtxt), process / loadgen (run the CLI server, drive it with tritonclient).
"""
