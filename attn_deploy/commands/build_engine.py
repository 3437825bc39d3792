"""`attn-deploy build-engine engines/<model>/trt-fp16`: build the TensorRT engine of a TensorRT target later, on
the GPU machine, and record what was (or was not) built in its manifest and report.md."""

from __future__ import annotations

import argparse

from attn_deploy.commands.shape_flags import add_profile_arguments, with_cli_profiles
from attn_deploy.display import console


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``build-engine`` parser."""
    p = sub.add_parser(
        "build-engine",
        help="build model.plan for a trt-* artifact (needs TensorRT and an NVIDIA GPU); prints trtexec/polygraphy",
        description="Compile the artifact's verified ONNX graph into a TensorRT engine (model.plan) next to it, "
        "and write the engine block of manifest.json and report.md. Without TensorRT it builds nothing, prints "
        "the equivalent trtexec and polygraphy commands and exits 2.",
    )
    p.add_argument(
        "artifact", metavar="DIR", help="a TensorRT artifact directory, e.g. engines/yolov8s-eca/trt-fp16"
    )
    add_profile_arguments(p)
    p.add_argument(
        "--commands-only",
        action="store_true",
        help="print the trtexec and polygraphy commands for these profiles; build and write nothing",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build (or only print how to build), record it, print the engine table."""
    # a command imports only what it runs: the artifact reader, the config and TensorRT load here
    from attn_deploy import fsutil
    from attn_deploy.artifacts import MANIFEST_NAME, REPORT_NAME, load_artifact
    from attn_deploy.commands.tables import engine_table
    from attn_deploy.errors import ConfigError, InputError
    from attn_deploy.export.artifact import render_report
    from attn_deploy.precision.engine import PLAN_NAME, compile_engine, engine_plan
    from attn_deploy.validate.validation import artifact_config

    artifact = load_artifact(args.artifact)
    config = with_cli_profiles(artifact_config(artifact.manifest), args)
    if config.runtime != "tensorrt":
        raise ConfigError(
            f"{artifact.dir} is an ONNX Runtime target ({config.name}); build-engine takes TensorRT targets: "
            "export with --config trt-fp16 or trt-int8"
        )
    inputs, export_shape = artifact.manifest["inputs"], artifact.manifest.get("export_shape")
    if not (isinstance(export_shape, list) and all(type(d) is int and d >= 1 for d in export_shape)):
        raise InputError(
            f"{artifact.dir}: the manifest has no export_shape; re-export it with `attn-deploy export`"
        )
    export_shapes = {str(inputs[0]["name"]): export_shape}
    if args.commands_only:
        plan = engine_plan(artifact.onnx_path, config, export_shapes)
        console.print(
            engine_table({**plan, "reason": "--commands-only: nothing built, nothing written"}, artifact.dir)
        )
        return 0

    engine = compile_engine(artifact.onnx_path, config, export_shapes)
    previous = artifact.manifest.get("engine") or {}
    keep_previous = not engine["built"] and previous.get("built") and (artifact.dir / PLAN_NAME).is_file()
    if not keep_previous:  # a failed build never replaces an engine built earlier (nothing is lost)
        manifest = {**artifact.manifest, "engine": engine, "config": config.to_dict()}
        fsutil.write_json(artifact.dir / MANIFEST_NAME, manifest)
        fsutil.write_text(artifact.dir / REPORT_NAME, render_report(manifest))
    console.print(engine_table(engine, artifact.dir))
    if keep_previous:
        raise InputError(
            f"no engine built: {engine['reason']}; the engine built earlier ({PLAN_NAME}) and its manifest are "
            "kept as they were"
        )
    if not engine["built"]:
        raise InputError(
            f"no engine built: {engine['reason']}; the commands above build it with NVIDIA's tools"
        )
    return 0
