"""TensorRT backend: the CPU-side decisions (profiles, cache keys) are tested here and in tests/test_trt_*.py; the
compile and the run need TensorRT and an NVIDIA GPU and skip without them (issue 15, item 9: static and dynamic
engines, FP16 and INT8 graphs, a degenerate profile, timing-cache reuse, ONNX Runtime provider fallback)."""

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
    typo = replace_config(config, {"profiles": {"imgs": given}})  # images would quietly get the derived one
    with pytest.raises(ConfigError, match="profiles name no input of the model: 'imgs'; its inputs: images"):
        resolve_profiles(typo, YOLO_INPUT, {"images": [1, 3, 640, 640]})
    for huge, needle in (([300, 3, 640, 640], "max batch 300 is over 256"), ([8, 3, 640, 5000], "over 4096")):
        too_big = replace_config(config, {"profiles": {"*": {**given, "max": huge}}})
        with pytest.raises(ConfigError, match=needle):
            resolve_profiles(too_big, YOLO_INPUT, {"images": [1, 3, 640, 640]})


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


def _tiny_onnx(path, batch: int | str = "batch") -> None:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Sigmoid", ["images"], ["out"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def _build_and_run(tmp_path, path, config_name, shapes, export_shape, overrides=None):
    """Build ``path`` with ``config_name`` (engine and timing cache in ``tmp_path``), run it at every shape in
    ``shapes`` and return (build, [(TensorRT output, ONNX Runtime CPU output)])."""
    from attn_deploy.backends.tensorrt import TensorRTRunner, build_engine

    config = replace_config(
        load_config(config_name), {"tensorrt.engine_cache_dir": str(tmp_path), **(overrides or {})}
    )
    inputs = [{"name": "images", "shape": ["batch", 3, 8, 8] if config.dynamic.batch else list(export_shape)}]
    build = build_engine(path, config, resolve_profiles(config, inputs, {"images": export_shape}))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pairs = []
    with TensorRTRunner(build.plan) as runner:
        for shape in shapes:
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            pairs.append((runner.infer({"images": x})["out"], session.run(None, {"images": x})[0]))
    return build, pairs


@GPU
def test_tensorrt_static_and_dynamic_engines_match_onnxruntime(tmp_path):
    static, dynamic = tmp_path / "static.onnx", tmp_path / "dynamic.onnx"
    _tiny_onnx(static, batch=1)
    _tiny_onnx(dynamic)
    _, pairs = _build_and_run(tmp_path, static, "trt-fp16", [(1, 3, 8, 8)], [1, 3, 8, 8])
    first, more = _build_and_run(
        tmp_path, dynamic, "trt-fp16-dynamic", [(1, 3, 8, 8), (5, 3, 8, 8)], [1, 3, 8, 8]
    )
    assert not first.cache_hit
    for out, expected in pairs + more:
        np.testing.assert_allclose(out, expected, atol=1e-5)  # Sigmoid in FP32: the same function


@GPU
def test_tensorrt_degenerate_profile_still_builds(tmp_path):
    # max_batch 1 and hw_range [1, 1]: min == opt == max on a dynamic input (needed a profile all the same)
    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    overrides = {"dynamic.max_batch": 1, "dynamic.hw_range": [1.0, 1.0]}
    _, [(out, expected)] = _build_and_run(
        tmp_path, path, "trt-fp16-dynamic", [(1, 3, 8, 8)], [1, 3, 8, 8], overrides
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)


@GPU
def test_tensorrt_fp16_and_int8_graphs(tmp_path):
    from attn_deploy.precision.fp16 import convert_fp16

    fp32, fp16, int8 = tmp_path / "conv.onnx", tmp_path / "conv16.onnx", tmp_path / "conv8.onnx"
    _conv_onnx(fp32)
    onnx.save(convert_fp16(onnx.load(str(fp32)))[0], str(fp16))
    _conv_onnx(int8, qdq=True)
    for path, config, atol in ((fp16, "trt-fp16-dynamic", 2e-2), (int8, "trt-int8-dynamic", 5e-2)):
        # FP16: 10-bit mantissa over a 27-term dot product of N(0,1) values (|out| < ~15): < 2e-2.
        # INT8: both sides run the same Q/DQ arithmetic; TensorRT's INT8 kernels round the same integers,
        # differences come from the float rescale only (< one output step of scale 0.1 / 2).
        _, pairs = _build_and_run(tmp_path, path, config, [(2, 3, 8, 8)], [1, 3, 8, 8])
        for out, expected in pairs:
            np.testing.assert_allclose(out, expected, atol=atol)


@GPU
def test_tensorrt_timing_cache_is_reused_by_a_second_build(tmp_path):
    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    first, _ = _build_and_run(tmp_path, path, "trt-fp16-dynamic", [(1, 3, 8, 8)], [1, 3, 8, 8])
    again, _ = _build_and_run(  # another optimization level: another engine, the same timing cache
        tmp_path, path, "trt-fp16-dynamic", [(1, 3, 8, 8)], [1, 3, 8, 8], {"tensorrt.optimization_level": 2}
    )
    assert not again.cache_hit and first.key != again.key
    assert again.timing_cache == first.timing_cache and again.timing_cache_reused


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu and a CUDA GPU",
)
def test_onnxruntime_cuda_provider_matches_cpu(tmp_path):
    from attn_deploy.backends.ort import OrtRunner

    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    runner = OrtRunner(path, providers=("CUDAExecutionProvider",))
    cuda = runner.infer({"images": x})["out"]
    assert runner.active_providers[0] == "CUDAExecutionProvider"  # a silent CPU fallback fails make_session
    cpu = OrtRunner(path).infer({"images": x})["out"]
    np.testing.assert_allclose(cuda, cpu, atol=1e-5)


@pytest.mark.skipif(
    "TensorrtExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu built with the TensorRT provider",
)
def test_onnxruntime_tensorrt_provider_runs_or_says_it_fell_back(tmp_path):
    from attn_deploy.backends.ort import OrtRunner

    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    runner = OrtRunner(path, providers=("TensorrtExecutionProvider", "CUDAExecutionProvider"))
    try:
        runner.activate()
    except InputError as exc:  # libnvinfer missing: ORT fell back to CUDA; we must say so, not run on it
        assert "did not start TensorrtExecutionProvider" in str(exc)
    else:
        assert runner.active_providers[0] == "TensorrtExecutionProvider"


def _conv_onnx(path, qdq: bool = False) -> None:
    """A 3x3 Conv (dynamic batch); with ``qdq``, input and weights through Q/DQ (int8, zero point 0)."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, 8, 8])
    inits = [onnx.numpy_helper.from_array(weight, "w")]
    nodes = [helper.make_node("Conv", ["xin", "win"], ["out"], pads=[1, 1, 1, 1])]
    if qdq:
        scale = np.float32(0.05)
        inits = [
            onnx.numpy_helper.from_array(np.clip(np.round(weight / scale), -127, 127).astype(np.int8), "wq"),
            onnx.numpy_helper.from_array(np.array(scale), "s"),
            onnx.numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["images", "s", "z"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xin"]),
            helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["win"]),
            *nodes,
        ]
    else:
        nodes = [
            helper.make_node("Identity", ["images"], ["xin"]),
            helper.make_node("Identity", ["w"], ["win"]),
            *nodes,
        ]
    graph = helper.make_graph(nodes, "conv", [x], [y], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_the_gpu_tests_graphs_run_on_onnxruntime_cpu(tmp_path):
    """The FP16 and Q/DQ graphs the GPU tests compile are valid and close to FP32 here already."""
    from attn_deploy.precision.fp16 import convert_fp16

    paths = {k: tmp_path / f"{k}.onnx" for k in ("fp32", "fp16", "int8")}
    _conv_onnx(paths["fp32"])
    onnx.save(convert_fp16(onnx.load(str(paths["fp32"])))[0], str(paths["fp16"]))
    _conv_onnx(paths["int8"], qdq=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    out = {
        k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
        for k, p in paths.items()
    }
    # FP16 weights and activations: relative 1e-3 per term over 27 terms, |out| < 15 on N(0, 1) data. INT8:
    # input and weights rounded to steps of 0.05 (half-step errors 0.025, 27 terms): well under 0.5.
    np.testing.assert_allclose(out["fp16"], out["fp32"], atol=5e-2)
    np.testing.assert_allclose(out["int8"], out["fp32"], atol=0.5)
