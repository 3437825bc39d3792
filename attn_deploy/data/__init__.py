"""attn_deploy.data"""
