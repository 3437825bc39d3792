"""Deploy rewrites: op-level rules applied while a model is traced for export.

The rules see what any module computes (``F.adaptive_avg_pool2d``, ``F.avg_pool2d`` with a kernel equal to the
input's runtime size, ``F.group_norm`` ...), not its class name, so they work on code this project has never seen.
Each rule returns a result equal to the original op; the export pipeline proves it by running the exported graph.
"""

from attn_deploy.rewrite.mode import DeployRewriteMode, RewriteSite
from attn_deploy.rewrite.rules import RULES, RewriteRule

__all__ = ["RULES", "DeployRewriteMode", "RewriteRule", "RewriteSite"]
