"""tamperscope.commands"""
