"""A scoped ``TorchFunctionMode`` that answers torch calls with the deploy rules while it is active.

No monkey-patching: the mode is pushed for the duration of a trace (``with DeployRewriteMode(): ...``) and
sees the functional calls of every module, ours or a user's. Every rewrite and every refusal names the module it
happened in, found by walking the Python stack to the innermost ``forward`` of a module of the traced model.
(Module hooks would do the same, but global forward hooks change how ``torch.export`` traces ``int(x.shape[i])``.)
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from attn_deploy.errors import UnsupportedOpError
from attn_deploy.rewrite.rules import RULES, RewriteRule


@dataclass(frozen=True)
class RewriteSite:
    """One application of a rule: which rule, in which module (qualified name, ``""`` for the root)."""

    rule: str
    module: str


class DeployRewriteMode(TorchFunctionMode):
    """Apply :data:`~attn_deploy.rewrite.rules.RULES` to every matching torch call made inside the block.

    Args:
        root: the model being traced; used to name modules in sites and errors (optional).
        rules: the rules to apply (default: all).
    """

    def __init__(self, root: nn.Module | None = None, rules: tuple[RewriteRule, ...] = RULES) -> None:
        super().__init__()
        self._by_target: dict[Any, RewriteRule] = {t: r for r in rules for t in r.targets}
        self._names = {id(m): name for name, m in root.named_modules()} if root is not None else {}
        self.sites: list[RewriteSite] = []

    @property
    def current_module(self) -> str:
        """Qualified name of the innermost module of the root whose code is running (``""`` for the root)."""
        frame = inspect.currentframe()
        while frame is not None:
            owner = frame.f_locals.get("self")
            if owner is not None and id(owner) in self._names:
                return self._names[id(owner)]
            frame = frame.f_back
        return ""

    # -- dispatch -------------------------------------------------------------------------------
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        rule = self._by_target.get(func)
        if rule is not None:
            try:
                result = rule.apply(*args, **kwargs)
            except UnsupportedOpError as exc:
                where = self.current_module or "<root>"
                raise UnsupportedOpError(f"module '{where}': {exc}") from None
            if result is not None:
                self.sites.append(RewriteSite(rule.name, self.current_module))
                return result
        return func(*args, **kwargs)

    def summary(self) -> dict[str, int]:
        """How often each rule was applied, by rule name."""
        return dict(Counter(site.rule for site in self.sites))


def rewrite_call(model: nn.Module, *inputs: torch.Tensor) -> tuple[Any, DeployRewriteMode]:
    """Run ``model(*inputs)`` with the rewrites active (eager PyTorch); return the output and the mode."""
    mode = DeployRewriteMode(model)
    with mode:
        out = model(*inputs)
    return out, mode
