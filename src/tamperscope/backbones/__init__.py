"""tamperscope.backbones"""
