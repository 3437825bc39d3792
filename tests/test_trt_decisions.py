"""Issue 15: every decision the TensorRT build, cache and runner make, as plain functions on CPU (the compile
itself needs TensorRT and a GPU: tests/test_tensorrt.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from attn_deploy.backends.engine_cache import (
    BUILDER_VERSION,
    engine_cache_key,
    external_data_files,
    file_lock,
    host_platform,
    onnx_digest,
    timing_cache_name,
)
from attn_deploy.backends.ort import check_providers, make_session
from attn_deploy.backends.tensorrt import (
    build_settings,
    dynamic_inputs,
    profiles_for_network,
    resolve_profiles,
    unresolved_outputs,
)
from attn_deploy.config import ShapeProfile, load_config, replace_config
from attn_deploy.errors import ConfigError, InputError
from attn_deploy.fsutil import sha256_file

SETTINGS = {"profiles": {}, "workspace_mib": 4096, "optimization_level": 3, "strongly_typed": True}


# ----------------------------------------------------------------------------------------- item 1: profiles


def test_a_dynamic_input_gets_a_profile_even_when_min_equals_max():
    # max_batch 1 and hw_range [1, 1]: the derived profile is degenerate (min == opt == max) ...
    config = replace_config(
        load_config("trt-fp16-dynamic"), {"dynamic.max_batch": 1, "dynamic.hw_range": [1.0, 1.0]}
    )
    inputs = [{"name": "images", "shape": ["batch", 3, "height", "width"]}]
    profiles = resolve_profiles(config, inputs, {"images": [1, 3, 64, 64]})
    assert profiles["images"] == ShapeProfile((1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    # ... and the network (parsed: -1 dims) still gets it: deciding from min != max dropped it before
    network = {"images": [-1, 3, -1, -1]}
    assert dynamic_inputs(network) == ["images"]
    assert profiles_for_network(network, profiles) == profiles


def test_a_static_network_needs_no_profile_and_a_missing_one_is_named():
    fixed = ShapeProfile((1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))
    assert profiles_for_network({"images": [1, 3, 64, 64]}, {"images": fixed}) == {}
    network = {"images": [-1, 3, 64, 64], "mask": [-1, 1, 64, 64]}
    with pytest.raises(ConfigError, match="input 'mask' is dynamic in the network but has no profile"):
        profiles_for_network(network, {"images": fixed})
    wrong = ShapeProfile((1, 3, 32, 32), (1, 3, 32, 32), (2, 3, 32, 32))
    with pytest.raises(ConfigError, match=r"dim 2 is static \(64\)"):
        profiles_for_network({"images": [-1, 3, 64, 64]}, {"images": wrong})


# ------------------------------------------------------------------------------------- item 2: timing cache


def test_timing_cache_file_is_keyed_by_tensorrt_gpu_and_platform():
    a = timing_cache_name("10.13.0", "NVIDIA H100 80GB HBM3 (sm_90)", "Linux-x86_64")
    assert a == "timing-10.13.0-NVIDIA-H100-80GB-HBM3-sm-90-Linux-x86-64.cache"
    names = {
        a,
        timing_cache_name("11.1.0", "NVIDIA H100 80GB HBM3 (sm_90)", "Linux-x86_64"),
        timing_cache_name("10.13.0", "NVIDIA L4 (sm_89)", "Linux-x86_64"),
        timing_cache_name("10.13.0", "NVIDIA H100 80GB HBM3 (sm_90)", "Linux-aarch64"),
    }
    assert len(names) == 4
    assert all("/" not in n and " " not in n and n.endswith(".cache") for n in names)  # a plain file name
    assert "/" not in timing_cache_name("10.0", "../../etc/passwd")


def test_file_lock_serialises_two_writers(tmp_path):
    path, order = tmp_path / "timing.cache", []

    def writer(tag: str) -> None:
        with file_lock(path):
            order.append(f"{tag}-in")
            time.sleep(0.05)
            order.append(f"{tag}-out")

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # flock is per open file description: two threads opening the file each wait for the other
    assert order in (["a-in", "a-out", "b-in", "b-out"], ["b-in", "b-out", "a-in", "a-out"])


# --------------------------------------------------------------------------------------- item 3: the runner


def test_data_dependent_outputs_are_found_before_allocation():
    assert unresolved_outputs({"output0": (2, 84, 8400)}) == []
    assert unresolved_outputs({"boxes": (-1, 4), "scores": (2, 80)}) == ["boxes"]


# ---------------------------------------------------------------------------------- item 4: ORT fallbacks


def test_a_provider_fallback_is_an_error_not_a_silent_cpu_run(tmp_path):
    check_providers(["CPUExecutionProvider"], ["CPUExecutionProvider"])
    check_providers(
        ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with pytest.raises(
        InputError, match=r"did not start CUDAExecutionProvider .* runs on \['CPUExecutionProvider'\]"
    ):
        check_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"])
    with pytest.raises(InputError, match="did not start TensorrtExecutionProvider"):
        check_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider"], ["CUDAExecutionProvider"])
    path = tmp_path / "tiny.onnx"
    _save_sigmoid(path)
    assert (
        make_session(path).get_providers()[0] == "CPUExecutionProvider"
    )  # the real session passes the check


# -------------------------------------------------------------------------------------- item 6: cache key


def test_cache_key_covers_platform_device_builder_and_external_weights(tmp_path):
    key = engine_cache_key("a" * 64, "10.13.0", "NVIDIA H100 (sm_90)", SETTINGS, platform_tag="Linux-x86_64")
    assert key == engine_cache_key(
        "a" * 64, "10.13.0", "NVIDIA H100 (sm_90)", dict(SETTINGS), platform_tag="Linux-x86_64"
    )
    others = {
        engine_cache_key("a" * 64, "10.13.0", "NVIDIA H100 (sm_90)", SETTINGS, platform_tag="Linux-aarch64"),
        engine_cache_key(
            "a" * 64, "10.13.0", "NVIDIA H100 (sm_90)", SETTINGS, device_index=1, platform_tag="Linux-x86_64"
        ),
    }
    assert key not in others and len(others) == 2
    assert host_platform().count("-") >= 1 and BUILDER_VERSION >= 2

    inline, external = tmp_path / "inline.onnx", tmp_path / "ext" / "model.onnx"
    _save_sigmoid(inline, weight=np.ones((1, 3, 1, 1), np.float32))
    assert onnx_digest(inline) == sha256_file(inline)  # nothing external: the file's own sha256
    external.parent.mkdir()
    model = onnx.load(str(inline))
    onnx.save(
        model,
        str(external),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert external_data_files(onnx.load(str(external), load_external_data=False)) == ["weights.bin"]
    before = onnx_digest(external)
    weights = external.parent / "weights.bin"
    weights.write_bytes(np.full((1, 3, 1, 1), 2.0, np.float32).tobytes())  # same .onnx, other weights
    assert onnx_digest(external) != before
    weights.unlink()
    with pytest.raises(InputError, match=r"keeps weights in 'weights\.bin', which is missing"):
        onnx_digest(external)


def test_build_settings_record_the_profiles():
    shape = (1, 3, 64, 64)
    settings = build_settings(load_config("trt-fp16"), {"images": ShapeProfile(shape, shape, shape)})
    assert settings["strongly_typed"] and settings["profiles"]["images"] == [[1, 3, 64, 64]] * 3


def _save_sigmoid(path, weight: np.ndarray | None = None) -> None:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 8, 8])
    nodes, inits = [helper.make_node("Sigmoid", ["images"], ["out"])], []
    if weight is not None:
        nodes = [helper.make_node("Mul", ["images", "w"], ["m"]), helper.make_node("Sigmoid", ["m"], ["out"])]
        inits = [numpy_helper.from_array(weight, "w")]
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
