"""Benchmarks: latency against PyTorch eager with interleaved timing, attention cost tables, seed claims.

* :mod:`.timing`          statistics (p50/p90/p99, CV), the interleaved loop, thread counts
* :mod:`.targets`         what gets timed: torch, ort, ort-naive, trt, torch-cuda, ort-cuda
* :mod:`.run`             one benchmark run over models x backends x precisions
* :mod:`.attention_cost`  every attention vs ``none`` on one architecture
* :mod:`.claims`          claimed (``attn_deploy/data/seed_claims.json``) vs measured
* :mod:`.render` / :mod:`.plots`  tables, checks against the targets, Markdown / JSON / PNG reports
* :mod:`.machine` / :mod:`.gpu`   machine description; CUDA-event timing (GPU only)
"""
