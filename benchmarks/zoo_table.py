"""Rewrite ``attn_deploy/data/zoo_table.json``, the static table `attn-deploy list` prints without torch.

    python -m benchmarks.zoo_table

Run it after adding a model or an attention module (``tests/test_front_door.py`` fails until you do).
"""

from __future__ import annotations

from attn_deploy import fsutil
from attn_deploy.commands.list_models import ZOO_TABLE
from attn_deploy.models.profile import zoo_table

if __name__ == "__main__":
    fsutil.write_json(ZOO_TABLE, zoo_table())
    print(f"wrote {ZOO_TABLE}")
