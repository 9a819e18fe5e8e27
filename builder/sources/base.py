"""The interface every source reader implements.

A build runs in two passes. The planning pass calls :meth:`SourceReader.list_cases`,
which reads only tables, folder listings and headers, and returns every case with
the question items it can give. The generation pass calls :meth:`SourceReader.load`
on one case at a time and receives the decoded 2D images. Keeping pixels out of
the planning pass lets the planner balance answers over a whole split before any
image is decoded, and keeps one volume in memory at a time.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from builder.mat import Triplet
from builder.policy import BadInputLog


@dataclass(frozen=True)
class ItemSpec:
    """One future question, known before any pixel is decoded.

    Attributes:
        key: Unique within the case, e.g. ``"flair-r0"``. The question id is
            ``f"{source}-{case_id}-{key}"``.
        triplet: The triplet of the question.
        view: The key of the :class:`Sample` in the dict that ``load`` returns.
        answer: The correct option text for classification items; ``None`` for
            segmentation items, whose options are boxes.
        distractors: Option texts that are certainly false for this image, from
            which the planner picks the three distractors. Empty for segmentation.
    """

    key: str
    triplet: Triplet
    view: str
    answer: str | None = None
    distractors: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Case:
    """One loading unit of one subject: an image, a study or a set of volumes.

    Attributes:
        source: The source name, one of ``builder.mat.SOURCES``.
        case_id: Unique within the source; used in question ids, so it must not
            change between rebuilds (a file stem or study id, never an index).
        subject_id: The patient, or the study where the source has no patient
            id. The pool split hashes (source, subject_id).
        files: Paths of the files ``load`` reads, relative to the source root,
            with ``/`` separators. Stored with each row so that a user who holds
            the source can rebuild rows shipped without pixels.
        items: The questions this case can give.
        metadata: Extra facts for the card or for ``load`` (grade, category, views).
    """

    source: str
    case_id: str
    subject_id: str
    files: tuple[str, ...]
    items: tuple[ItemSpec, ...]
    metadata: Mapping[str, object] = field(default_factory=dict)


@dataclass
class Sample:
    """One decoded 2D image, ready to become a question.

    Attributes:
        image: ``uint8`` array of shape (rows, columns), grayscale, already scaled
            to 0-255 by the reader. Volumes are shown as axial slices in the
            radiological convention (patient right on the image left, anterior up).
        mask: ``bool`` array of the same shape for segmentation items, else None.
        slice_index: The axial slice index in the canonical (RAS) volume, or -1
            for 2D sources.
        source_file: The image file, relative to the source root.
    """

    image: np.ndarray
    mask: np.ndarray | None = None
    slice_index: int = -1
    source_file: str = ""


class SourceReader(abc.ABC):
    """Reads one source in its native layout.

    Args:
        root: The source folder, e.g. ``SOURCES/chexpert``.
        bad_inputs: The bad-input policy and the record of skipped inputs.
        options: Reader-specific settings (see each reader's docstring).
    """

    name: ClassVar[str]
    triplets: ClassVar[tuple[Triplet, ...]]
    download_instructions: ClassVar[str]

    def __init__(self, root: Path, bad_inputs: BadInputLog | None = None, **options: object) -> None:
        self.root = Path(root)
        self.bad_inputs = bad_inputs if bad_inputs is not None else BadInputLog()
        self.options = options
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.name} source folder not found: {self.root}. {self.download_instructions}"
            )

    @abc.abstractmethod
    def list_cases(self) -> list[Case]:
        """Return every usable case, reading tables, listings and headers only.

        Bad rows and files go through ``self.bad_inputs``. The order is sorted
        by ``case_id`` so that two runs over the same files agree.
        """

    @abc.abstractmethod
    def load(self, case: Case) -> dict[str, Sample]:
        """Decode the images of one case and return them keyed by ``ItemSpec.view``.

        Raises:
            BadInputError: naming the file when it cannot be decoded. The caller
                applies the bad-input policy.
        """
