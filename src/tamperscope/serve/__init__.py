"""tamperscope.serve"""
