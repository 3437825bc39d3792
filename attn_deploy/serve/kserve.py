"""A KServe ``InferenceService`` (Triton runtime) for a Triton model repository: the step from one machine to a
cluster.

Layout after KServe's v1beta1 API with the ``kserve-tritonserver`` ClusterServingRuntime
(kserve/kserve ``config/runtimes/kserve-tritonserver.yaml``: model formats ``triton``, ``onnx``, ``tensorrt``;
protocol v2; Triton started with ``--model-repository=/mnt/models``, where KServe's storage initializer puts the
contents of ``storageUri``)::

    apiVersion: serving.kserve.io/v1beta1
    kind: InferenceService
    metadata: {name: <name>}
    spec:
      predictor:
        model:
          modelFormat: {name: triton}
          runtime: kserve-tritonserver
          storageUri: <where the repository was uploaded>
          resources: {limits: {nvidia.com/gpu: "1"}}   # when a model needs a GPU (TensorRT plan or accelerator)

Not run against a cluster here: the manifest is checked for shape and names in tests, not applied.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from attn_deploy.errors import ConfigError
from attn_deploy.fsutil import write_text
from attn_deploy.serve.model_config import TENSORRT_PLATFORM

RUNTIME = "kserve-tritonserver"
MODEL_FORMAT = "triton"
STORAGE_SCHEMES = ("gs", "s3", "pvc", "https", "http", "hdfs", "webhdfs", "oci", "hf", "azure")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def service_name(text: str) -> str:
    """``text`` as a Kubernetes DNS-1035 label (lowercase letters, digits, '-'; starts with a letter; <= 63)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:63].rstrip("-")
    return name or "attn-deploy"


def needs_gpu(configs: Sequence[dict[str, Any]]) -> bool:
    """True when a Triton model config needs a GPU: a TensorRT plan, or ONNX Runtime's TensorRT accelerator."""
    return any(
        c.get("platform") == TENSORRT_PLATFORM or "execution_accelerators" in c.get("optimization", {})
        for c in configs
    )


def inference_service(name: str, storage_uri: str, gpu: bool) -> dict[str, Any]:
    """The ``InferenceService`` manifest as a dict; one-line ``ConfigError`` for a bad name or URI."""
    if not _DNS_LABEL.match(name):
        raise ConfigError(
            f"--kserve-name {name!r} is not a Kubernetes name: lowercase letters, digits and '-', starting with a "
            "letter, at most 63 characters"
        )
    scheme = storage_uri.split("://", 1)[0] if "://" in storage_uri else ""
    if scheme not in STORAGE_SCHEMES:
        raise ConfigError(
            f"--storage-uri {storage_uri!r} is not a URI KServe downloads from; use one of "
            f"{', '.join(s + '://' for s in STORAGE_SCHEMES)} (where the repository folder was uploaded)"
        )
    model: dict[str, Any] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": RUNTIME,
        "storageUri": storage_uri,
    }
    if gpu:
        model["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"model": model}},
    }


def write_inference_service(
    path: str | os.PathLike[str], name: str, storage_uri: str, configs: Sequence[dict[str, Any]]
) -> Path:
    """Write the manifest for a repository whose models have ``configs`` to ``path`` (atomically)."""
    manifest = inference_service(name, storage_uri, needs_gpu(configs))
    return write_text(path, yaml.safe_dump(manifest, sort_keys=False))
