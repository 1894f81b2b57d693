"""One file per method; each registers itself in :mod:`tamperscope.registry`."""
