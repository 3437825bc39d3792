"""attn_deploy.precision"""
