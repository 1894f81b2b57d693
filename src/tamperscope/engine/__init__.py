"""tamperscope.engine"""
