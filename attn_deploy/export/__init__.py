"""attn_deploy.export"""
