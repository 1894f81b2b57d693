"""BR-Gen-style dataset generation (paper 001 §3; README of clpbc/BR-Gen): Perception -> Creation -> Evaluation.

:func:`generate` builds an ``Au/ Tp/ Gt/`` folder with ``train/val/test.json`` (8:1:1 by real photo),
``metadata.jsonl`` and a summary. Modules: :mod:`.regions` (built-in region masks), :mod:`.creation` (built-in
forgers), :mod:`.quality` (weight-free filters), :mod:`.prompts` (captions), :mod:`.backends` (built-in and
local-model back ends), :mod:`.pipeline` (planning, retries, resumable writing), :mod:`.report` (summary and
contact sheet).
"""
from .creation import BUILTIN_METHODS, DEFAULT_METHODS
from .pipeline import GenerateOptions, generate
from .quality import QualityThresholds
from .regions import AREA_BINS, REGION_TYPES

__all__ = ["generate", "GenerateOptions", "QualityThresholds", "BUILTIN_METHODS", "DEFAULT_METHODS", "AREA_BINS",
           "REGION_TYPES"]
