"""The pool partition: every subject lands in train, validation or test by a stable hash.

The hash depends only on the source and the subject id, so a subject keeps its
split when other subjects are added or removed, and no subject is on two sides.
"""

from __future__ import annotations

import hashlib

import numpy as np

POOL_SPLITS: tuple[str, ...] = ("train", "validation", "test")

# Fractions of subjects per pool split, in POOL_SPLITS order.
SPLIT_FRACTIONS: tuple[float, float, float] = (0.7, 0.1, 0.2)


def stable_fraction(*parts: object) -> float:
    """Map the parts to a number in [0, 1) by SHA-256, the same on every machine and Python run.

    Python's ``hash()`` is salted per process, so it cannot be used here.
    """
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stable_rng(*parts: object) -> np.random.Generator:
    """Return a NumPy generator seeded by SHA-256 of the parts, e.g. ``stable_rng(seed, question_id)``."""
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def pool_split(source: str, subject_id: str) -> str:
    """Return the pool split (``train``, ``validation`` or ``test``) of one subject."""
    fraction = stable_fraction(source, subject_id)
    threshold = 0.0
    for split, share in zip(POOL_SPLITS, SPLIT_FRACTIONS, strict=True):
        threshold += share
        if fraction < threshold:
            return split
    return POOL_SPLITS[-1]
