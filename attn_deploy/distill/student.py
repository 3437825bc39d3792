"""The student's starting point: the teacher's weights everywhere but in the attention modules."""

from __future__ import annotations

from torch import nn

from attn_deploy.distill.sites import attention_sites
from attn_deploy.errors import WeightsError

_SHOWN = 3


def _non_attention_keys(model: nn.Module) -> dict[str, tuple[int, ...]]:
    sites = attention_sites(model)
    return {
        key: tuple(value.shape)
        for key, value in model.state_dict().items()
        if not any(key.startswith(f"{site}.") for site in sites)
    }


def init_student(teacher: nn.Module, student: nn.Module) -> list[str]:
    """Copy every non-attention tensor of ``teacher`` into ``student``; return the student's attention keys,
    which keep their own (new) initialisation.

    Strict: the non-attention keys of both models must be the same, with the same shapes, so that every one of
    the student's is filled from the teacher. Anything else is a one-line ``WeightsError`` naming the keys.
    """
    t_keys, s_keys = _non_attention_keys(teacher), _non_attention_keys(student)
    shapes = [f"{k} {s_keys[k]} vs {t_keys[k]}" for k in s_keys if k in t_keys and s_keys[k] != t_keys[k]]
    problems = [
        (label, keys)
        for label, keys in (
            ("not in the teacher", [k for k in s_keys if k not in t_keys]),
            ("not in the student", [k for k in t_keys if k not in s_keys]),
            ("shape mismatch", shapes),
        )
        if keys
    ]
    if problems:
        detail = "; ".join(f"{label}: {', '.join(keys[:_SHOWN])}" for label, keys in problems)
        raise WeightsError(
            f"the student's non-attention weights cannot come from the teacher ({detail}); "
            "use a student of the teacher's architecture and class count"
        )
    t_state = teacher.state_dict()
    student.load_state_dict({k: t_state[k] for k in s_keys}, strict=False)
    return [k for k in student.state_dict() if k not in s_keys]
