"""TensorRT backend: the CPU-side decisions (profiles, cache keys) are tested here; the compile and the run
need TensorRT and an NVIDIA GPU and skip without them."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from attn_deploy.backends.engine_cache import EngineCache, engine_cache_key
from attn_deploy.backends.tensorrt import NOT_INSTALLED, build_settings, require_tensorrt, resolve_profiles
from attn_deploy.config import ShapeProfile, load_config, replace_config
from attn_deploy.errors import ConfigError, InputError
from attn_deploy.fsutil import sha256_file


def _tensorrt_usable() -> bool:
    try:
        require_tensorrt()
    except InputError:
        return False
    import torch

    return torch.cuda.is_available()


GPU = pytest.mark.skipif(
    not _tensorrt_usable(), reason="needs TensorRT and an NVIDIA GPU (pip install attn-deploy[trt])"
)
YOLO_INPUT = [{"name": "images", "shape": ["batch", 3, "height", "width"]}]


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="a tensorrt package is importable here"
)
def test_missing_tensorrt_is_a_clear_error():
    with pytest.raises(InputError) as info:
        require_tensorrt()
    assert str(info.value) == NOT_INSTALLED


def test_profiles_derived_from_the_export_shape():
    config = load_config("trt-fp16-dynamic")
    (profile,) = resolve_profiles(config, YOLO_INPUT, {"images": [1, 3, 640, 640]}).values()
    assert profile == ShapeProfile((1, 3, 320, 320), (1, 3, 640, 640), (16, 3, 1280, 1280))
    resnet = resolve_profiles(config, YOLO_INPUT, {"images": [2, 3, 224, 224]})["images"]
    assert resnet == ShapeProfile((1, 3, 96, 96), (2, 3, 224, 224), (16, 3, 448, 448))  # multiples of 32
    static = [{"name": "images", "shape": [1, 3, 640, 640]}]
    fixed = resolve_profiles(load_config("trt-fp16"), static, {"images": [1, 3, 640, 640]})["images"]
    assert fixed.min == fixed.opt == fixed.max == (1, 3, 640, 640)


def test_profiles_from_the_config_are_checked_against_the_model():
    given = {"min": [1, 3, 256, 256], "opt": [4, 3, 512, 512], "max": [8, 3, 1024, 1024]}
    config = replace_config(load_config("trt-int8-dynamic"), {"profiles": {"*": given}})
    profile = resolve_profiles(config, YOLO_INPUT, {"images": [1, 3, 640, 640]})["images"]
    assert profile == ShapeProfile((1, 3, 256, 256), (4, 3, 512, 512), (8, 3, 1024, 1024))
    half_static = [{"name": "images", "shape": ["batch", 3, 640, 640]}]
    with pytest.raises(ConfigError, match="dim 2 is static"):
        resolve_profiles(config, half_static, {"images": [1, 3, 640, 640]})
    bad_rank = replace_config(config, {"profiles": {"images": {"min": [1], "opt": [1], "max": [2]}}})
    with pytest.raises(ConfigError, match="rank 1 does not match"):
        resolve_profiles(bad_rank, YOLO_INPUT, {"images": [1, 3, 640, 640]})
    tokens = [{"name": "tokens", "shape": [1, "sequence"]}]
    with pytest.raises(ConfigError, match=r"give `profiles: \{tokens: \.\.\.\}`"):
        resolve_profiles(load_config("trt-fp16-dynamic"), tokens, {"tokens": [1, 77]})


def test_engine_cache_key_changes_with_every_input(tmp_path):
    shape = (1, 3, 64, 64)
    settings = build_settings(load_config("trt-fp16"), {"images": ShapeProfile(shape, shape, shape)})
    assert settings["strongly_typed"] and settings["profiles"]["images"] == [[1, 3, 64, 64]] * 3
    base = engine_cache_key("a" * 64, "10.13.0", "NVIDIA H100 (sm_90)", settings)
    assert base == engine_cache_key("a" * 64, "10.13.0", "NVIDIA H100 (sm_90)", dict(settings))
    variants = [
        engine_cache_key("b" * 64, "10.13.0", "NVIDIA H100 (sm_90)", settings),
        engine_cache_key("a" * 64, "11.4.0", "NVIDIA H100 (sm_90)", settings),
        engine_cache_key("a" * 64, "10.13.0", "NVIDIA L4 (sm_89)", settings),
        engine_cache_key("a" * 64, "10.13.0", "NVIDIA H100 (sm_90)", {**settings, "workspace_mib": 1}),
    ]
    assert len({base, *variants}) == 5

    cache = EngineCache.at(tmp_path)
    assert cache.load(base) is None
    cache.save(base, b"plan-bytes", {"gpu": "NVIDIA H100 (sm_90)"})
    assert cache.load(base) == b"plan-bytes"
    assert cache.load(variants[0]) is None
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"abc")
    assert sha256_file(onnx_file) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _tiny_onnx(path) -> None:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Sigmoid", ["images"], ["out"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


@GPU
def test_tensorrt_engine_builds_caches_and_matches_onnxruntime(tmp_path):
    from attn_deploy.backends.tensorrt import TensorRTRunner, build_engine

    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    config = replace_config(load_config("trt-fp16-dynamic"), {"tensorrt.engine_cache_dir": str(tmp_path)})
    profiles = resolve_profiles(
        config, [{"name": "images", "shape": ["batch", 3, 8, 8]}], {"images": [1, 3, 8, 8]}
    )
    first = build_engine(path, config, profiles)
    assert not first.cache_hit and build_engine(path, config, profiles).cache_hit
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with TensorRTRunner(first.plan) as runner:
        out = runner.infer({"images": x})["out"]
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu and a CUDA GPU",
)
def test_onnxruntime_cuda_provider_matches_cpu(tmp_path):
    from attn_deploy.backends.ort import OrtRunner

    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    cuda = OrtRunner(path, providers=("CUDAExecutionProvider",)).infer({"images": x})["out"]
    cpu = OrtRunner(path).infer({"images": x})["out"]
    np.testing.assert_allclose(cuda, cpu, atol=1e-5)
