"""tamperscope.report"""
