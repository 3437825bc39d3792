"""attn_deploy.rewrite"""
