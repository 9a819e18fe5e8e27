"""The values that options of ``python -m eval`` accept.

This module imports nothing heavy, so that ``--help`` and usage errors come
back without loading torch and transformers (about 6 s on two CPU cores).
"""

from __future__ import annotations

MODES: tuple[str, ...] = ("generate", "likelihood")
"""Scoring modes: greedy generation whose text is parsed for a letter, or the likelihood of each letter."""

DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")
"""Names of the torch dtypes a model can be loaded in."""

DTYPE_CHOICES: tuple[str, ...] = ("auto", *DTYPE_NAMES)
"""Values of ``--dtype``: ``auto`` picks one for the device."""

BASELINES: tuple[str, ...] = ("random", "prior")
"""Weight-free baselines that ``--baseline`` scores instead of a model."""

BACKENDS: tuple[str, ...] = ("hf", "vllm")
"""Inference back-ends: transformers, or vLLM when it is installed."""
