"""attn_deploy.attention"""
