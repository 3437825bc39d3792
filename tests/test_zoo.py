"""Model zoo: names, specs, structure, parameter counts, weights loading, BN calibration, synthetic data."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_deploy.attention import list_attention
from attn_deploy.data.synthetic import synthetic_images, synthetic_mosaics
from attn_deploy.errors import ConfigError, InputError, ModelNotFoundError, WeightsError
from attn_deploy.models import create_model, list_models, model_spec, resolve_name
from attn_deploy.models.calibrate import calibrate_batchnorm
from attn_deploy.models.profile import count_gflops, count_params
from attn_deploy.models.weights import load_weights

DATA = Path(__file__).parent / "data"


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- names and specs ---------------------------------------------------------------------------


def test_list_models_is_every_arch_times_every_attention() -> None:
    names = list_models()
    assert names == sorted(names)
    attentions = list_attention()
    assert "none" in attentions
    archs = ("resnet18", "resnet50", "yolov8n", "yolov8s", "yolov8m")
    assert set(names) == {f"{arch}-{att}" for arch in archs for att in attentions}


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("yolov8-eca", "yolov8s-eca"),
        ("resnet50", "resnet50-none"),
        ("YOLOv8", "yolov8s-none"),
        ("yolov8m-se", "yolov8m-se"),
    ],
)
def test_aliases_resolve(alias: str, canonical: str) -> None:
    assert resolve_name(alias) == canonical
    assert model_spec(alias).name == canonical


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(ModelNotFoundError) as exc:
        create_model("yolov8s-ecaa")
    assert "did you mean yolov8s-eca" in _one_line(exc)
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_name("mobilenet")
    assert "resnet18" in _one_line(exc)


def test_model_spec_fields() -> None:
    yolo = model_spec("yolov8-eca")
    assert (yolo.arch, yolo.attention, yolo.task) == ("yolov8s", "eca", "detect")
    assert (yolo.input_size, yolo.num_classes, yolo.preprocess) == ((640, 640), 80, "letterbox")
    assert (yolo.input_name, yolo.output_names, yolo.mean, yolo.std) == (
        "images",
        ("output0",),
        (0, 0, 0),
        (1, 1, 1),
    )
    assert yolo.placement == "neck"
    resnet = model_spec("resnet50-se")
    assert (resnet.task, resnet.input_size, resnet.num_classes) == ("classify", (224, 224), 1000)
    assert (resnet.output_names, resnet.preprocess, resnet.mean) == (
        ("logits",),
        "resize_crop",
        (0.485, 0.456, 0.406),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        resnet.num_classes = 10  # type: ignore[misc]


def test_spec_checks_input_size() -> None:
    model_spec("yolov8n").check_size(256, 384)
    with pytest.raises(InputError) as exc:
        model_spec("yolov8n").check_size(250, 384)
    assert "multiples of 32" in _one_line(exc) and "256x384" in str(exc.value)


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        create_model("yolov8n-se", placement="head", calibrate=False)
    assert all(p in _one_line(exc) for p in ("neck", "backbone", "all"))
    with pytest.raises(ConfigError):
        create_model("resnet18-se", placement="neck", calibrate=False)
    with pytest.raises(ConfigError):
        create_model("resnet18", num_classes=0, calibrate=False)


# --- structure and size ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "published_m"),
    [
        # Ultralytics' exact counts of the yaml-built (unfused) models, DFL's 16 fixed weights included;
        # its docs publish them rounded: 3.2M / 11.2M / 25.9M (3,151,904 / 11,156,544 / 25,886,080 fused).
        ("yolov8n", 3_157_200, 3.2),
        ("yolov8s", 11_166_560, 11.2),
        ("yolov8m", 25_902_640, 25.9),
        ("resnet18", 11_689_512, 11.7),  # torchvision's exact counts
        ("resnet50", 25_557_032, 25.6),
    ],
)
def test_param_counts(name: str, params: int, published_m: float) -> None:
    assert count_params(create_model(name, calibrate=False)) == params
    assert round(params / 1e6, 1) == published_m


def test_fused_yolov8n_matches_ultralytics_count() -> None:
    model = create_model("yolov8n", calibrate=False)
    bn_params = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert count_params(model) - bn_params == 3_151_904  # BN folded: -2C per BN, +C conv bias


def test_attention_adds_params_where_placed() -> None:
    none = count_params(create_model("yolov8s-none", calibrate=False))
    neck = create_model("yolov8s-se", calibrate=False)
    backbone = create_model("yolov8s-se", placement="backbone", calibrate=False)
    everywhere = create_model("yolov8s-se", placement="all", calibrate=False)
    assert sorted(neck.attn.keys(), key=int) == ["15", "18", "21"]
    assert list(backbone.attn.keys()) == ["9"]
    assert sorted(everywhere.attn.keys(), key=int) == ["2", "4", "6", "8", "9", "12", "15", "18", "21"]
    assert none < count_params(backbone) < count_params(neck) < count_params(everywhere)
    assert count_params(create_model("resnet50-se", calibrate=False)) > 25_557_032


def test_resnet50_has_torchvision_state_dict() -> None:
    expected = json.loads((DATA / "torchvision_resnet50_keys.json").read_text())
    state = create_model("resnet50", calibrate=False).state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == expected


def test_yolov8_has_ultralytics_state_dict_keys() -> None:
    state = create_model("yolov8n", calibrate=False).state_dict()
    assert len(state) == 355  # Ultralytics: "Transferred 355/355 items from pretrained weights"
    assert {"model.0.conv.weight", "model.0.bn.num_batches_tracked", "model.9.cv2.conv.weight"} < set(state)
    assert {"model.22.cv2.0.0.conv.weight", "model.22.cv3.2.2.bias", "model.22.dfl.conv.weight"} < set(state)
    with_se = create_model("yolov8n-se", calibrate=False).state_dict()
    assert set(with_se) - set(state) == {
        k for k in with_se if k.startswith(("attn.15.", "attn.18.", "attn.21."))
    }


def test_resnet_attention_sits_in_every_block() -> None:
    model = create_model("resnet18-eca", calibrate=False)
    blocks = [m for name, m in model.named_modules() if name.count(".") == 1 and name.startswith("layer")]
    assert len(blocks) == 8
    assert all(type(b.attn).__name__ != "Identity" for b in blocks)


@pytest.mark.parametrize("attention", [a for a in list_attention() if a != "none"])
def test_every_attention_runs_in_both_families(attention: str) -> None:
    kwargs = {"topk": 4} if attention == "sparse" else {}
    for name, placement in ((f"yolov8n-{attention}", "all"), (f"resnet18-{attention}", None)):
        model = create_model(name, placement=placement, calibrate=False, **kwargs)
        with torch.no_grad():
            out = model(torch.rand(1, 3, 64, 64))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("name", "gflops"),
    # Ultralytics' published GFLOPs at 640 (BN-fused) and torchvision's 2 x GMACs at 224
    [("yolov8n", 8.7), ("yolov8s", 28.6), ("yolov8m", 78.9), ("resnet18", 3.6), ("resnet50", 8.2)],
)
def test_gflops_match_published(name: str, gflops: float) -> None:
    model = create_model(name, calibrate=False)
    assert count_gflops(model, (1, 3, *model.spec.input_size)) == pytest.approx(gflops, abs=0.05)


def test_gflops_of_a_module_that_needs_real_values() -> None:
    class ItemUser(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * float(x.sum().item() >= 0)  # .item() cannot run on the meta device

    assert count_gflops(ItemUser(), (1, 3, 32, 32)) == pytest.approx(2 * 8 * 27 * 30 * 30 / 1e9)


# --- YOLO output -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yolov8n_eca() -> torch.nn.Module:
    """A calibrated default-weights model, built once for the tests that only run it."""
    return create_model("yolov8n-eca")


@pytest.mark.parametrize(("size", "anchors"), [((320, 320), 2100), ((256, 384), 8 * 12 * (16 + 4 + 1))])
def test_yolo_output_shape_and_decoding(
    yolov8n_eca: torch.nn.Module, size: tuple[int, int], anchors: int
) -> None:
    x = yolov8n_eca.spec.normalize(synthetic_images(2, size, seed=3))
    with torch.no_grad():
        out = yolov8n_eca(x)
    assert out.shape == (2, 84, anchors)
    boxes, scores = out[:, :4], out[:, 4:]
    assert (boxes[:, 2:] > 0).all()  # width and height
    # box centres lie within one DFL reach (15 bins) of their anchor, so near the image
    assert boxes[:, 0].min() > -16 * 32 and boxes[:, 0].max() < size[1] + 16 * 32
    assert ((scores > 0) & (scores < 1)).all()


def test_yolo_num_classes_and_bias_init() -> None:
    model = create_model("yolov8n", num_classes=3, calibrate=False)
    assert model.spec.num_classes == 3
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 7, 84)
    head = model.model[22]
    assert head.cv3[0][-1].bias[0].item() == pytest.approx(math.log(5 / 3 / (640 / 8) ** 2))
    assert (head.cv2[2][-1].bias == 1.0).all()


def test_yolo_rejects_sizes_not_multiple_of_32() -> None:
    model = create_model("yolov8n", calibrate=False)
    with pytest.raises(InputError) as exc:
        model(torch.rand(1, 3, 100, 96))
    assert "multiples of 32" in _one_line(exc)


# --- default weights ---------------------------------------------------------------------------


def test_default_weights_are_deterministic() -> None:
    x = torch.rand(1, 3, 128, 128)
    a, b = create_model("yolov8n-cbam"), create_model("yolov8n-cbam")
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.slow
def test_default_weights_are_the_same_in_another_process() -> None:
    # at the same thread count: BN calibration's convolutions sum in a thread-dependent order (1 thread per
    # pytest-xdist worker here, 2 in a bare process), which moves the 7th digit of the weights
    code = (
        f"import torch; torch.set_num_threads({torch.get_num_threads()}); "
        "from attn_deploy.models import create_model; "
        "m = create_model('resnet18-se'); "
        "print(repr(sum(float(v.double().sum()) for v in m.state_dict().values())))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    model = create_model("resnet18-se")
    assert other == repr(sum(float(v.double().sum()) for v in model.state_dict().values()))


def test_create_model_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    create_model("resnet18", calibrate=False)
    assert torch.equal(torch.rand(3), expected)


def test_bn_calibrated_activations_are_realistic(yolov8n_eca: torch.nn.Module) -> None:
    unseen = synthetic_images(2, (640, 640), seed=99)
    yolo = yolov8n_eca
    bn = yolo.model[0].bn
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert bn.momentum == 0.03 and not bn.training
    with torch.no_grad():
        out = yolo(yolo.spec.normalize(unseen))
    class_logits = torch.logit(out[:, 4:].double())
    assert 0.2 < class_logits.std() < 10  # scores spread like a detector's, not one constant
    assert -16 < class_logits.median() < -6  # mostly background, as the bias prior says

    resnet = create_model("resnet18")
    with torch.no_grad():
        logits = resnet(resnet.spec.normalize(synthetic_images(2, (224, 224), seed=99)))
    assert 0.05 < logits.std() < 10
    assert not torch.allclose(logits[0], logits[1])


def test_calibrate_batchnorm_restores_state() -> None:
    model = create_model("resnet18", calibrate=False)
    bn = model.bn1
    images = model.spec.normalize(synthetic_images(2, (64, 64)))
    calibrate_batchnorm(model, images, batch_size=1)
    assert bn.momentum == 0.1 and not model.training and not bn.training
    assert bn.num_batches_tracked.item() == 2
    with torch.no_grad():
        per_image_means = model.conv1(images).mean((2, 3))
    assert torch.allclose(bn.running_mean, per_image_means.mean(0), atol=1e-6)  # cumulative average


# --- weights files -----------------------------------------------------------------------------


def test_plain_resnet50_checkpoint_loads_into_resnet50_se(tmp_path: Path) -> None:
    source = create_model("resnet50", calibrate=False)
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    target = create_model("resnet50-se", calibrate=False)
    left = load_weights(target, path)
    assert left and all(".attn." in k for k in left)
    assert set(left) == set(target.state_dict()) - set(source.state_dict())
    assert torch.equal(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)


def test_create_model_with_weights_skips_calibration(tmp_path: Path) -> None:
    source = create_model("yolov8n", calibrate=False)
    with torch.no_grad():
        source.model[0].bn.running_mean.fill_(0.5)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = create_model("yolov8n-eca", weights=path)
    assert torch.equal(loaded.model[0].bn.running_mean, source.model[0].bn.running_mean)
    assert loaded.spec.name == "yolov8n-eca"


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as exc:
        create_model("resnet18", weights=tmp_path / "nope.pt")
    assert "nope.pt' not found" in _one_line(exc) and "--weights" in str(exc.value)
    with pytest.raises(WeightsError) as exc:
        create_model("resnet18", weights=tmp_path)
    assert "is a folder" in _one_line(exc)


@pytest.mark.parametrize(
    ("name", "small", "enough"),
    [
        ("resnet18-ema", (32, 32), (33, 33)),
        ("resnet18-simam", (32, 32), (32, 64)),  # 1x2 on the stride-32 map: 2 positions, not square
        ("resnet18-sparse", (64, 64), (128, 320)),  # 4x10: 40 positions >= its top-k of 32
        ("yolov8n-ema", (32, 32), (32, 64)),
    ],
)
def test_a_size_too_small_for_the_attention_is_refused_up_front(
    name: str, small: tuple[int, int], enough: tuple[int, int]
) -> None:
    """Below the positions its attention needs on the stride-32 map, an input is refused before any export
    work (was a NaN or an exporter's error naming no option); non-square inputs count positions, not sides."""
    with pytest.raises(InputError, match=rf"{name} needs \d+ positions on its stride-32 feature map"):
        model_spec(name).check_size(*small)
    model_spec(name).check_size(*enough)


def test_a_legacy_pickle_is_one_error_without_torch_warnings(tmp_path: Path) -> None:
    """torch warns about the protocol of a pre-zip pickle before refusing it: the user gets our line only."""
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps({"model": Path("x")}, protocol=4))  # a bare pickle, no torch container
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsError) as exc:
            create_model("resnet18", weights=path)
    assert "as a plain state_dict" in _one_line(exc)
    assert [str(w.message)[:60] for w in caught] == []


@pytest.mark.parametrize(("name", "classes", "size"), [("resnet18-se", 10, 32), ("yolov8n-eca", 3, 64)])
def test_a_fine_tuned_checkpoint_brings_its_class_count(
    tmp_path: Path, name: str, classes: int, size: int
) -> None:
    path = tmp_path / "fine_tuned.pt"
    torch.save(create_model(name, num_classes=classes, calibrate=False).state_dict(), path)
    loaded = create_model(name, weights=path)
    assert loaded.spec.num_classes == classes
    out = loaded(torch.zeros(1, 3, size, size))
    assert out.shape[1] == (classes if loaded.spec.task == "classify" else 4 + classes)


def test_mismatched_weights_name_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "ten_classes.pt"
    torch.save(create_model("resnet18", num_classes=10, calibrate=False).state_dict(), path)
    with pytest.raises(WeightsError) as exc:
        create_model("resnet18", weights=path, num_classes=1000)
    assert "fc.weight" in _one_line(exc)
    torch.save({"fc.bias": torch.zeros(3)}, path)
    with pytest.raises(WeightsError) as exc:
        create_model("resnet18", weights=path)
    assert "no single class-count tensor matching" in _one_line(exc)
    torch.save(create_model("resnet18", calibrate=False).state_dict(), path)
    with pytest.raises(WeightsError) as exc:
        create_model("resnet50", weights=path)
    assert "missing keys" in _one_line(exc) or "unexpected keys" in str(exc.value)


def test_weights_file_that_is_no_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError):
        create_model("resnet18", weights=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError) as exc:
        create_model("resnet18", weights=path)
    _one_line(exc)


# --- synthetic images --------------------------------------------------------------------------


def test_synthetic_images_are_deterministic_and_natural() -> None:
    images = synthetic_images(4, (96, 128), seed=1)
    assert images.shape == (4, 96, 128, 3) and images.dtype == np.uint8
    assert np.array_equal(images, synthetic_images(4, (96, 128), seed=1))
    assert np.array_equal(images[:2], synthetic_images(2, (96, 128), seed=1))
    assert not np.array_equal(images, synthetic_images(4, (96, 128), seed=2))
    assert all(img.std() > 10 for img in images)  # not flat
    means = images.reshape(4, -1).mean(1)
    assert means.std() > 2  # brightness varies between images
    # natural images: neighbouring pixels correlate strongly
    x = images.astype(np.float64)
    assert np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1] > 0.8


def test_synthetic_mosaics_shape() -> None:
    mosaics = synthetic_mosaics(2, (65, 64), seed=0)
    assert mosaics.shape == (2, 65, 64, 3) and mosaics.flags.c_contiguous
