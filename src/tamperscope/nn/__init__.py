"""Reusable layers: attention, Mix-FFN, MLP, pixel-difference convolutions, FiLM, edge operators, losses."""
