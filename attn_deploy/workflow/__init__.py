"""Workflows: the steps that compose the stage rooms, above them all.

``zoo``: export a zoo model by name to a target (build the model and its sample, export with
:mod:`attn_deploy.export`, convert with :mod:`attn_deploy.precision`). The stage rooms below never import
this room; ``bench`` and the CLI commands do.
"""
