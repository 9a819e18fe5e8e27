"""The closed Modality-Anatomy-Task vocabulary and the triplets CrossMed uses.

Every question carries one triplet. Adding a source means adding a reader and
naming its triplets here; protocols, features and the card read them from this
module.
"""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES: tuple[str, ...] = ("X-ray", "MRI", "CT")
ANATOMIES: tuple[str, ...] = ("Lung", "Brain")
TASKS: tuple[str, ...] = ("Classification", "Segmentation")
SOURCES: tuple[str, ...] = ("chexpert", "siim", "brats", "mosmed")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError naming ``name``.

    Raises:
        ValueError: naming the argument, the value found, the valid values and
            the closest valid value when one differs only by case or punctuation.
    """
    if value in allowed:
        return value

    folded = {_fold(option): option for option in allowed}
    hint = folded.get(_fold(value))
    suggestion = f" Did you mean {hint!r}?" if hint else ""
    raise ValueError(
        f"Invalid {name} {value!r}: expected one of {', '.join(map(repr, allowed))}.{suggestion}"
    )


def _fold(text: str) -> str:
    return "".join(character for character in text.lower() if character.isalnum())


@dataclass(frozen=True, order=True)
class Triplet:
    """A Modality-Anatomy-Task combination such as X-ray / Lung / Segmentation."""

    modality: str
    anatomy: str
    task: str

    def __post_init__(self) -> None:
        check_choice("modality", self.modality, MODALITIES)
        check_choice("anatomy", self.anatomy, ANATOMIES)
        check_choice("task", self.task, TASKS)

    @property
    def name(self) -> str:
        """The display name, e.g. ``X-ray/Lung/Segmentation``."""
        return f"{self.modality}/{self.anatomy}/{self.task}"

    @property
    def slug(self) -> str:
        """The lower-case name used in config names and file paths, e.g. ``xray-lung-segmentation``."""
        parts = (self.modality, self.anatomy, self.task)
        return "-".join(_fold(part) for part in parts)

    def shares_nothing_with(self, other: Triplet) -> bool:
        """Return True when the two triplets differ in modality, anatomy and task alike."""
        return (
            self.modality != other.modality
            and self.anatomy != other.anatomy
            and self.task != other.task
        )

    @classmethod
    def from_name(cls, name: str) -> Triplet:
        """Parse a display name (``MRI/Brain/Classification``) or a slug (``mri-brain-classification``)."""
        for triplet in TRIPLETS:
            if name in (triplet.name, triplet.slug):
                return triplet
        valid = ", ".join(triplet.name for triplet in TRIPLETS)
        raise ValueError(f"Unknown triplet {name!r}: expected one of {valid}.")


XRAY_LUNG_CLASSIFICATION = Triplet("X-ray", "Lung", "Classification")
XRAY_LUNG_SEGMENTATION = Triplet("X-ray", "Lung", "Segmentation")
MRI_BRAIN_CLASSIFICATION = Triplet("MRI", "Brain", "Classification")
MRI_BRAIN_SEGMENTATION = Triplet("MRI", "Brain", "Segmentation")
CT_LUNG_CLASSIFICATION = Triplet("CT", "Lung", "Classification")

# The order here is the order of ClassLabel ids in the dataset features.
TRIPLETS: tuple[Triplet, ...] = (
    XRAY_LUNG_CLASSIFICATION,
    XRAY_LUNG_SEGMENTATION,
    MRI_BRAIN_CLASSIFICATION,
    MRI_BRAIN_SEGMENTATION,
    CT_LUNG_CLASSIFICATION,
)

TRIPLETS_BY_SOURCE: dict[str, tuple[Triplet, ...]] = {
    "chexpert": (XRAY_LUNG_CLASSIFICATION,),
    "siim": (XRAY_LUNG_SEGMENTATION,),
    "brats": (MRI_BRAIN_CLASSIFICATION, MRI_BRAIN_SEGMENTATION),
    "mosmed": (CT_LUNG_CLASSIFICATION,),
}

LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
