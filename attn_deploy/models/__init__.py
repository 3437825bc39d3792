"""attn_deploy.models"""
