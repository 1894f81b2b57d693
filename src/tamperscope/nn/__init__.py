"""Reusable layers: attention, Mix-FFN, pixel-difference convolutions, FiLM, edge operators, losses."""
