"""Typed export configs: shipped files, `extends`, one-line errors, CLI shortcuts."""

from __future__ import annotations

from pathlib import Path

import pytest

from attn_deploy.cli import main
from attn_deploy.config import (
    PACKAGE_CONFIG_DIR,
    ExportConfig,
    load_config,
    replace_config,
    resolve_export_config,
)
from attn_deploy.errors import ConfigError

SHIPPED = sorted(PACKAGE_CONFIG_DIR.glob("*.yaml"))


def test_every_target_is_shipped_and_loads():
    names = {p.stem for p in SHIPPED}
    for base in ("ort-fp32", "ort-fp16", "ort-int8", "trt-fp16", "trt-int8"):
        assert {base, f"{base}-dynamic"} <= names
    for path in SHIPPED:
        config = load_config(path)
        assert config.name == path.stem
        assert config.precision in path.stem
        assert config.runtime == ("tensorrt" if path.stem.startswith("trt") else "onnxruntime")
        assert config.dynamic.batch == config.dynamic.hw == path.stem.endswith("-dynamic")


def test_int8_targets_use_their_runtime_s_integer_format():
    # ONNX Runtime's fast x86 kernels take uint8 activations (U8S8); TensorRT takes signed, symmetric only.
    for name in ("ort-int8", "ort-int8-dynamic"):
        assert (load_config(name).int8.activations, load_config(name).int8.symmetric) == ("uint8", False)
    for name in ("trt-int8", "trt-int8-dynamic"):
        assert (load_config(name).int8.activations, load_config(name).int8.symmetric) == ("int8", True)


def test_extends_merges_deeply_and_never_inherits_the_name(tmp_path: Path):
    (tmp_path / "base.yaml").write_text(
        "name: base\nprecision: int8\nint8: {num_images: 8, percentile: 99.9}\n"
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text("extends: ../base.yaml\nint8: {calibration: entropy}\n")
    config = load_config(sub / "child.yaml")
    assert config.name == "child"
    assert (config.precision, config.int8.calibration, config.int8.num_images, config.int8.percentile) == (
        "int8",
        "entropy",
        8,
        99.9,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("precison: fp16\n", "unknown key 'precison'; allowed: name, runtime, precision"),
        ("precision: fp8\n", "precision: 'fp8' is not allowed; use one of fp32, fp16, int8"),
        ("int8: {calibraton: minmax}\n", "unknown key 'int8.calibraton'; allowed: calibration,"),
        (
            "int8: {calibration: kl}\n",
            "int8.calibration: 'kl' is not allowed; use one of minmax, entropy, percentile",
        ),
        ("int8: {num_images: many}\n", "int8.num_images: 'many' is not allowed; use an integer"),
        ("tensorrt: {optimization_level: 9}\n", "tensorrt.optimization_level: 9 is not allowed; use 0..5"),
        ("dynamic: {batch: yes please}\n", "dynamic.batch: 'yes please' is not allowed; use true or false"),
        ("profiles: {images: {min: [1, 3], opt: [2, 3], max: [1, 3]}}\n", "profiles.images.min/opt/max"),
        ("opset: 21\n", "opset: 21 is not allowed; use 17..20"),
        (
            "runtime: tensorrt\nprecision: int8\nint8: {activations: uint8}\n",
            "int8.activations: 'uint8' is not allowed; use int8 for TensorRT",
        ),
        (
            "runtime: tensorrt\nprecision: int8\nint8: {symmetric: false}\n",
            "int8.symmetric: False is not allowed",
        ),
        ("extends: nowhere.yaml\n", "extends a missing file"),
        ("precision: [fp16\n", "is not valid YAML"),
        ("- a list\n", "the top level must be a mapping"),
        ('name: "."\n', "name '.' cannot be a file or folder name"),
        ('name: ".."\n', "name '..' cannot be a file or folder name"),
        ("name: a/b\n", "name 'a/b' cannot be a file or folder name (it contains '/')"),
        ("name: .hidden\n", "it starts with '.'"),
        ("1: 2\n", "unknown key '1'"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply to be a config"),
    ],
)
def test_bad_configs_fail_in_one_line(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_config_files_fail_in_one_line(tmp_path: Path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00name: x")
    with pytest.raises(ConfigError, match=r"binary\.yaml is not a UTF-8 text file"):
        load_config(binary)
    with pytest.raises(ConfigError, match=r"is a folder; give a YAML file"):
        load_config(tmp_path)


@pytest.mark.parametrize("opset", [5, 16, 21, 99, -1])
def test_opset_is_checked_with_and_without_a_config(opset: int):
    for config in (None, "ort-fp16"):
        with pytest.raises(ConfigError, match=rf"--opset: {opset} is not allowed; use 17\.\.20"):
            resolve_export_config(config, opset=opset)


def test_a_user_config_extends_a_shipped_target_by_name(tmp_path: Path):
    (tmp_path / "mine.yaml").write_text("extends: ort-int8\nint8: {num_images: 8}\n")
    config = load_config(tmp_path / "mine.yaml")
    assert (config.name, config.precision, config.int8.num_images) == ("mine", "int8", 8)
    assert config.int8.activations == "uint8" and config.int8.outer_gates_fp  # inherited from ort-int8
    # a file next to the user's config wins over a shipped one of the same name
    (tmp_path / "ort-int8.yaml").write_text("precision: fp16\n")
    assert load_config(tmp_path / "mine.yaml").precision == "fp16"
    (tmp_path / "typo.yaml").write_text("extends: ort-int9\n")
    with pytest.raises(ConfigError, match=r"extends a missing file .*ort-int9.*shipped target: .*ort-int8"):
        load_config(tmp_path / "typo.yaml")


def test_ort_int8_keeps_only_gate_products_float():
    # measured: products of two gates run faster in float on ONNX Runtime, single gates in INT8
    # (benchmarks/results/int8_gate_products.md, int8_placement.md); TensorRT keeps every gate float
    for name in ("ort-int8", "ort-int8-dynamic"):
        assert (load_config(name).int8.keep_gates_fp, load_config(name).int8.outer_gates_fp) == (False, True)
    assert load_config("trt-int8").int8.keep_gates_fp


def test_extends_cycle_is_reported(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: a\.yaml -> b\.yaml -> a\.yaml"):
        load_config(tmp_path / "a.yaml")


def test_an_unknown_key_names_the_file_that_holds_it_clipped(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("opset: 18\nint8:\n  bogus: 1\n")
    (tmp_path / "top.yaml").write_text("extends: base.yaml\nopset: 17\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: unknown key 'int8\.bogus'"):
        load_config(tmp_path / "top.yaml")
    (tmp_path / "odd.yaml").write_text("extends: notes.yaml\n")
    (tmp_path / "notes.yaml").write_text("root:x:0:0:a long line of a file that is not a config: 1\n")
    with pytest.raises(
        ConfigError, match=r"notes\.yaml: unknown key 'root:x:0:0:a long line of a file that\.\.\.'"
    ):
        load_config(tmp_path / "odd.yaml")


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match=r"not found; give a YAML path or one of: .*trt-fp16"):
        load_config("trt-fp17")


def test_overrides_and_round_trip():
    config = load_config("trt-int8", {"int8.calibration": "minmax", "tensorrt.workspace_mib": 512})
    assert (config.int8.calibration, config.tensorrt.workspace_mib) == ("minmax", 512)
    assert replace_config(ExportConfig(), config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"int8\.percentile: 0\.0 is not allowed"):
        replace_config(config, {"int8.percentile": 0})


def test_export_shortcuts():
    plain = resolve_export_config()
    assert (plain.name, plain.precision, plain.dynamic.batch, plain.dynamic.hw) == (
        "ort-fp32",
        "fp32",
        False,
        False,
    )
    plain_dynamic = resolve_export_config(dynamic=True)
    assert (plain_dynamic.name, plain_dynamic.dynamic.batch, plain_dynamic.dynamic.hw) == (
        "ort-fp32",
        True,
        True,
    )
    assert resolve_export_config(precision="fp16").name == "ort-fp16"
    assert resolve_export_config(precision="int8", dynamic=True).name == "ort-int8-dynamic"
    batch_only = resolve_export_config(precision="fp16", dynamic=True, dynamic_hw=False)
    assert batch_only.name == "ort-fp16-dynamic-batch"
    assert (batch_only.dynamic.batch, batch_only.dynamic.hw) == (True, False)
    from_dynamic = resolve_export_config("ort-fp32-dynamic", dynamic=True, dynamic_hw=False)
    assert from_dynamic.name == "ort-fp32-dynamic-batch" and not from_dynamic.dynamic.hw
    config = resolve_export_config("trt-fp16", dynamic=True, opset=17)
    assert (config.name, config.dynamic.batch, config.dynamic.hw, config.opset) == (
        "trt-fp16-dynamic",
        True,
        True,
        17,
    )
    assert resolve_export_config("ort-int8", calib_method="entropy").int8.calibration == "entropy"
    with pytest.raises(ConfigError, match="--precision fp16 contradicts trt-int8"):
        resolve_export_config("trt-int8", "fp16")
    with pytest.raises(ConfigError, match="apply to int8 targets"):
        resolve_export_config("ort-fp16", calib_method="minmax")
    with pytest.raises(ConfigError, match="need --precision int8"):
        resolve_export_config(calib_dir="images/")


def test_cli_reports_a_config_typo_in_one_red_line(tmp_path: Path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text(
        "extends: " + str(PACKAGE_CONFIG_DIR / "ort-fp16.yaml") + "\nfp16: {keep_fp32_op: [Softmax]}\n"
    )
    assert main(["export", "--model", "resnet18-se", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key 'fp16.keep_fp32_op'" in err and "keep_fp32_ops" in err
    assert len(err.splitlines()) <= 2  # one message (rich may wrap it)
