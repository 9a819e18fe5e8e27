"""Protocols as data: which triplets form each config's train side and test side.

Every config selects pool parts. Its ``train`` and ``validation`` splits hold the
pool train and pool validation rows of its train triplets; its ``test`` split
holds the pool test rows of its test triplets. Because the pool is partitioned
by subject before any config exists, one target triplet has the same test rows
in every config that tests it.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.mat import (
    MRI_BRAIN_CLASSIFICATION,
    TRIPLETS,
    XRAY_LUNG_SEGMENTATION,
    Triplet,
)

PROTOCOL_NAMES: tuple[str, ...] = ("all", "related", "unrelated", "zero_overlap", "cross_task")

# Headline test set of `related` and `unrelated`: a segmentation and a classification
# triplet whose modality, anatomy and task each occur in the other three triplets,
# so `unrelated` hides both combinations while every factor stays seen.
HEADLINE_TARGETS: tuple[Triplet, ...] = (XRAY_LUNG_SEGMENTATION, MRI_BRAIN_CLASSIFICATION)

# `zero_overlap` needs one target; MRI/Brain/Classification leaves X-ray/Lung/Segmentation to train on.
ZERO_OVERLAP_HEADLINE_TARGET: Triplet = MRI_BRAIN_CLASSIFICATION


@dataclass(frozen=True)
class Protocol:
    """One config: a name, its protocol family and the triplets on each side.

    Attributes:
        name: The config name passed to ``load_dataset``.
        family: One of ``PROTOCOL_NAMES``.
        train: Triplets whose pool train and validation rows form the train and validation splits.
        test: Triplets whose pool test rows form the test split.
        description: One sentence for the dataset card.
    """

    name: str
    family: str
    train: tuple[Triplet, ...]
    test: tuple[Triplet, ...]
    description: str

    def split_triplets(self, split: str) -> tuple[Triplet, ...]:
        """Return the triplets whose rows of pool split ``split`` this config's ``split`` holds."""
        return self.test if split == "test" else self.train

    def seen_factors(self) -> dict[str, bool]:
        """Report, for the test triplets' modality, anatomy and task, whether training sees each one."""
        factors = {}
        for axis in ("modality", "anatomy", "task"):
            train_values = {getattr(triplet, axis) for triplet in self.train}
            factors[axis] = all(getattr(triplet, axis) in train_values for triplet in self.test)
        return factors


def _others(excluded: tuple[Triplet, ...]) -> tuple[Triplet, ...]:
    return tuple(triplet for triplet in TRIPLETS if triplet not in excluded)


def _disjoint_from(targets: tuple[Triplet, ...]) -> tuple[Triplet, ...]:
    return tuple(
        triplet for triplet in TRIPLETS if all(triplet.shares_nothing_with(target) for target in targets)
    )


def _by_task(task: str) -> tuple[Triplet, ...]:
    return tuple(triplet for triplet in TRIPLETS if triplet.task == task)


def headline_protocols() -> list[Protocol]:
    """Return the configs ``all``, ``related``, ``unrelated``, ``zero_overlap`` and ``cross_task``."""
    zero_target = (ZERO_OVERLAP_HEADLINE_TARGET,)
    return [
        Protocol("all", "all", TRIPLETS, TRIPLETS, "Every triplet with its pool splits."),
        Protocol(
            "related", "related", TRIPLETS, HEADLINE_TARGETS,
            "Test triplets are also in training.",
        ),
        Protocol(
            "unrelated", "unrelated", _others(HEADLINE_TARGETS), HEADLINE_TARGETS,
            "Test triplets are absent from training; their modality, anatomy and task each occur in training.",
        ),
        Protocol(
            "zero_overlap", "zero_overlap", _disjoint_from(zero_target), zero_target,
            "Training shares no modality, no anatomy and no task with the test triplet.",
        ),
        Protocol(
            "cross_task", "cross_task", _by_task("Classification"), _by_task("Segmentation"),
            "Train on classification triplets, test on segmentation triplets.",
        ),
    ]


def target_protocols() -> list[Protocol]:
    """Return one config per valid (protocol, target triplet) pair, e.g. ``unrelated-mri-brain-segmentation``.

    ``zero_overlap`` exists for a target only when some triplet shares nothing
    with it, and ``cross_task`` only for segmentation targets.
    """
    protocols = []
    for target in TRIPLETS:
        single = (target,)
        candidates = [
            ("related", TRIPLETS, "Target triplet also in training."),
            ("unrelated", _others(single), "Target triplet absent from training."),
            ("zero_overlap", _disjoint_from(single), "Training shares no modality, anatomy or task with the target."),
        ]
        if target.task == "Segmentation":
            candidates.append(("cross_task", _by_task("Classification"), "Train on classification triplets only."))

        for family, train, description in candidates:
            if train:
                protocols.append(Protocol(f"{family}-{target.slug}", family, train, single, description))
    return protocols


def all_protocols() -> list[Protocol]:
    """Return every config, headline configs first."""
    return headline_protocols() + target_protocols()


def get_protocol(name: str) -> Protocol:
    """Return the config called ``name``.

    Raises:
        ValueError: naming the unknown config and listing the valid names.
    """
    protocols = {protocol.name: protocol for protocol in all_protocols()}
    if name in protocols:
        return protocols[name]
    raise ValueError(f"Unknown CrossMed config {name!r}: expected one of {', '.join(protocols)}.")
