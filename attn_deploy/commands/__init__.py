"""CLI sub-commands, one module each (see ``attn_deploy.cli``)."""
