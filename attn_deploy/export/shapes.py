"""Dynamic-shape specs for the exporter and the extra shapes an export is verified at."""

from __future__ import annotations

import math
import re

import onnx
import torch

DIM_NAMES = {0: "batch", 2: "height", 3: "width"}


def dynamic_axes_for(sample: torch.Tensor, dynamic_batch: bool, dynamic_hw: bool) -> dict[int, str]:
    """Axis -> name of the dims to make dynamic for one input (H/W only on 4-D inputs)."""
    axes: dict[int, str] = {}
    if dynamic_batch and sample.dim() >= 1:
        axes[0] = DIM_NAMES[0]
    if dynamic_hw and sample.dim() == 4:
        axes[2], axes[3] = DIM_NAMES[2], DIM_NAMES[3]
    return axes


def torch_dynamic_shapes(axes_per_input: list[dict[int, str]]) -> tuple[dict[int, object] | None, ...]:
    """``dynamic_shapes`` for ``torch.onnx.export(dynamo=True)``.

    ``Dim.DYNAMIC`` lets torch.export infer the relations a model imposes (e.g. H divisible by 32) instead of
    failing on named ``Dim`` ranges; :func:`rename_dims` gives the symbols readable names afterwards.
    """
    return tuple({axis: torch.export.Dim.DYNAMIC for axis in axes} or None for axes in axes_per_input)


def rename_dims(model: onnx.ModelProto, axes_per_input: list[dict[int, str]]) -> None:
    """Replace the exporter's symbols (``s77``) by the names in ``axes_per_input`` everywhere in the graph."""
    mapping: dict[str, str] = {}
    for value, axes in zip(model.graph.input, axes_per_input, strict=False):
        dims = value.type.tensor_type.shape.dim
        for axis, name in axes.items():
            if axis < len(dims) and dims[axis].dim_param:
                mapping.setdefault(dims[axis].dim_param, name)
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in mapping) + r")\b")
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: mapping[m.group(1)], dim.dim_param)


ANCHORS = "anchors"
"""The name of an output dim that sums positions over several feature maps (``h/8*w/8 + h/16*w/16 + ...``):
YOLO's (and any multi-scale dense head's) anchor points."""


def _top_level_terms(formula: str) -> list[str]:
    """``formula`` split at the ``+`` signs outside parentheses."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(formula):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "+" and depth == 0:
            terms.append(formula[start:i])
            start = i + 1
    return [*terms, formula[start:]]


def is_summed_positions(formula: str, dims: tuple[str, str] = ("height", "width")) -> bool:
    """True for a sum of two or more products of both spatial dims: positions over several feature maps."""
    terms = _top_level_terms(formula)
    return sum("*" in t and all(d in t for d in dims) for t in terms) >= 2


def name_output_dims(model: onnx.ModelProto) -> dict[str, str]:
    """Name the graph outputs' sums of positions over feature maps ``anchors``, in place: YOLO's output length,
    which the exporter writes as a 200-character formula of height and width. Other dims keep their symbols.

    A second distinct such sum gets a suffix (``anchors_2``); each formula stays in its output's ``doc_string``.
    Names only: ONNX Runtime does not compute with them, and the export is verified at unseen shapes
    afterwards. Returns name -> formula.
    """
    named: dict[str, str] = {}
    for value in model.graph.output:
        renamed = []
        for dim in value.type.tensor_type.shape.dim:
            formula = dim.dim_param
            if not formula or not is_summed_positions(formula):
                continue
            name = next((n for n, f in named.items() if f == formula), None)
            if name is None:
                name = ANCHORS if not named else f"{ANCHORS}_{len(named) + 1}"
                named[name] = formula
            dim.dim_param = name
            renamed.append(f"{name} = {formula}")
        if renamed:
            value.doc_string = "; ".join([value.doc_string, *renamed] if value.doc_string else renamed)
    return named


def _stride(h: int, w: int) -> int:
    """The largest power of two (<= 32) dividing both H and W: alternative sizes keep this divisibility."""
    stride = 1
    while stride < 32 and h % (stride * 2) == 0 and w % (stride * 2) == 0:
        stride *= 2
    return stride


def _round_to(value: float, step: int) -> int:
    return max(step, round(value / step) * step)


def _alternatives(size: int, step: int, fractions: tuple[float, float]) -> list[int]:
    """Sizes other than ``size`` keeping its divisibility: smaller fractions first (fast), then larger ones."""
    candidates = [_round_to(size * f, step) for f in fractions] + [size + k * step for k in (1, 2, 3, 4)]
    picked: list[int] = []
    for c in candidates:
        if c != size and c not in picked:
            picked.append(c)
    return picked


def _steps(h: int, w: int) -> list[int]:
    """Size steps to try, in order: the power-of-two stride (CNNs: a YOLO input stays a multiple of 32), then the
    other divisors of gcd(H, W), smallest first (a patch size of 7 at 224 = 2^5 * 7 needs multiples of 7; a
    window of 7 behind a patch of 4 needs multiples of 28)."""
    first = _stride(h, w)
    g = math.gcd(h, w)
    return [first] + [d for d in range(2, g + 1) if g % d == 0 and first % d != 0]


def _hw_pairs(h: int, w: int) -> list[tuple[int, int]]:
    """Non-square (H, W) pairs other than the export's (all pairs of the first step, two of each other step),
    then two square ones for models that need H == W. The second pair is the first plus one on each side: off
    the export's grid, so a graph that holds only at even sizes (a branch on ``h % 2`` frozen at trace time) is
    caught wherever PyTorch takes odd sizes (skipped where it does not, e.g. YOLO's stride-32 concat)."""
    pairs: list[tuple[int, int]] = []
    squares: list[tuple[int, int]] = []
    for n, step in enumerate(_steps(h, w)):
        heights = _alternatives(h, step, (0.75, 0.5))
        squares += [(s, s) for s in heights if (s, s) != (h, w) and (s, s) not in squares]
        widths = _alternatives(w, step, (0.5, 0.75))
        found: list[tuple[int, int]] = []
        for i, (sh, sw) in enumerate(zip(heights, widths, strict=False)):
            if sh == sw:  # keep the verified shapes non-square
                sw = widths[i + 1] if i + 1 < len(widths) else sw + step
            if (sh, sw) not in pairs and (sh, sw) != (h, w):
                found.append((sh, sw))
        pairs += found if n == 0 else found[:2]
    off_grid = [(pairs[0][0] + 1, pairs[0][1] + 1)] if pairs else []
    return pairs[:1] + off_grid + pairs[1:] + squares[:2]


def verification_shapes(
    shape: tuple[int, ...], dynamic_batch: bool, dynamic_hw: bool
) -> list[tuple[int, ...]]:
    """The export shape, then candidate shapes it was not exported at, varying what is dynamic.

    The export is verified at the export shape and the first two candidates the PyTorch model accepts (a
    top-k attention needs a minimum feature-map size, a patch embedding needs multiples of its patch size). H/W
    candidates are non-square, smaller than the export shape first, and keep a divisibility of the export size:
    its power-of-two stride first (a YOLO input stays a multiple of 32), then its other factors (multiples of 7,
    14, 28... for 224), so a model that takes only multiples of its patch size still gets verified.
    """
    shapes = [tuple(shape)]
    if not (dynamic_batch or dynamic_hw):
        return shapes
    batch = shape[0]
    if dynamic_hw and len(shape) == 4:
        for i, (sh, sw) in enumerate(_hw_pairs(shape[2], shape[3])):
            k = (
                i if i < 2 else i - 1
            )  # the off-grid pair and the one after it share a batch: either is second
            b = batch + 1 + k % 2 if dynamic_batch else batch
            shapes.append((b, shape[1], sh, sw))
    else:
        shapes += [(batch + k, *shape[1:]) for k in (1, 2)]
    return shapes
