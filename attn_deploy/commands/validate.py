"""`attn-deploy validate` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the sub-command's parser."""
    p = sub.add_parser("validate", help="(not yet available)")
    p.set_defaults(func=lambda args: 1)
