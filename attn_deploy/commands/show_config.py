"""`attn-deploy config [TARGET]`: print the resolved export config of a deploy target (``extends`` followed,
defaults filled in, the export shortcuts applied), as YAML or JSON: what `export` with the same flags uses."""

from __future__ import annotations

import argparse

from rich.markup import escape

from attn_deploy.display import add_json_option, console, emit_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``config`` parser."""
    p = sub.add_parser(
        "config", help="print the resolved config of a deploy target (tolerances, INT8, profiles)"
    )
    p.add_argument(
        "target",
        nargs="?",
        default=None,
        help="a name (ort-int8, trt-fp16) or a YAML path (default ort-fp32)",
    )
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None, help="as export's")
    dyn = p.add_mutually_exclusive_group()
    dyn.add_argument("--dynamic", action="store_true", help="as export's: dynamic batch, height and width")
    dyn.add_argument("--dynamic-batch", action="store_true", help="as export's: dynamic batch only")
    p.add_argument("--opset", type=int, default=None, help="as export's")
    add_json_option(p, "the config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the config export would use with these flags."""
    import yaml  # light, but only this command prints YAML

    from attn_deploy.config import find_config, resolve_export_config

    config = resolve_export_config(
        args.target,
        args.precision,
        dynamic=args.dynamic or args.dynamic_batch,
        dynamic_hw=not args.dynamic_batch,
        opset=args.opset,
    )
    data = config.to_dict()
    if args.json:
        emit_json(data, args.json)
        return 0
    source = find_config(args.target) if args.target else None
    # never wrapped at the terminal's width: a comment line's tail without its "#" would be invalid YAML
    header = f"[dim]# {escape(config.name)}{f' (from {source})' if source else ''}[/]"
    console.print(header, highlight=False, soft_wrap=True)
    console.print(escape(yaml.safe_dump(data, sort_keys=False).rstrip()), highlight=False, soft_wrap=True)
    return 0
