"""attn_deploy.serve"""
