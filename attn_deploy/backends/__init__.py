"""attn_deploy.backends"""
