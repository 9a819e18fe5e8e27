"""Score Hugging Face image-text-to-text models on a built CrossMed config.

Run ``python -m eval --help`` for the command line, or call
:func:`eval.api.evaluate` from Python.
"""

from __future__ import annotations
