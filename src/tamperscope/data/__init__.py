"""tamperscope.data"""
