"""SIIM-ACR Pneumothorax chest radiographs as X-ray / Lung / Segmentation questions.

The Kaggle download has DICOM files under ``dicom-images-train/<study>/<series>/``
(or flat), named ``<SOPInstanceUID>.dcm``, and ``train-rle.csv`` with the header
``ImageId, EncodedPixels``. ``ImageId`` is the file stem. ``EncodedPixels`` is
``-1`` for an image without pneumothorax or a run-length encoded mask (see
:mod:`builder.rle`); an image with several pneumothorax regions has one row per
region.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from builder.dicom import read_dicom_header, read_dicom_image
from builder.mat import XRAY_LUNG_SEGMENTATION
from builder.paths import resolve_inside
from builder.policy import BadInputError, BadInputLog
from builder.rle import EMPTY_MASK_RLE, decode_rle, rle_area
from builder.sources.base import Case, ItemSpec, Sample, SourceReader
from builder.tables import read_csv_rows

logger = logging.getLogger(__name__)

RLE_CSV = "train-rle.csv"
ITEM_KEY = "pneumothorax"
VIEW = "image"


class SIIMReader(SourceReader):
    """Reads the SIIM-ACR Pneumothorax training DICOM files and their RLE masks.

    Each DICOM file whose ``train-rle.csv`` rows give a non-empty mask becomes
    one segmentation question, and the mask is the union of the image's rows.
    Images marked ``-1`` give no question. The reader finds DICOM files anywhere
    under the root. The Kaggle test images may sit next to the training images
    because they have no CSV rows and are skipped.

    Args:
        root: The folder that contains ``train-rle.csv`` and the DICOM folders.
        bad_inputs: The bad-input policy and the record of skipped inputs.
    """

    name = "siim"
    triplets = (XRAY_LUNG_SEGMENTATION,)
    download_instructions = (
        "Download the SIIM-ACR Pneumothorax Segmentation training data "
        "(https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation): the dicom-images-train/ folder of "
        f"<SOPInstanceUID>.dcm files and {RLE_CSV}. Put both directly under <data_dir>/siim/."
    )

    def __init__(self, root: Path, bad_inputs: BadInputLog | None = None, **options: object) -> None:
        super().__init__(root, bad_inputs, **options)
        if options:
            raise ValueError(f"Unknown SIIM option(s) {sorted(options)}: the SIIM reader takes no options")

        self.csv_path = self.root / RLE_CSV
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"{RLE_CSV} not found in {self.root}. {self.download_instructions}")

    def list_cases(self) -> list[Case]:
        """Read ``train-rle.csv`` and the headers of the DICOM files with a mask.

        Returns:
            Cases sorted by ``case_id`` (the ImageId), each with one item whose
            view is ``"image"``. ``metadata`` contains ``encoded_pixels`` (the
            image's RLE strings), ``rows`` and ``columns``.

        Raises:
            BadInputError: under the default policy, for an ImageId with both
                ``-1`` and a mask, an invalid RLE value, two DICOM files with one
                ImageId, or an unreadable DICOM header.
        """
        masks = self._read_rle_table()
        files = self._find_dicom_files()

        cases = []
        marked_empty = 0
        for image_id in sorted(set(files) & set(masks)):
            if not masks[image_id]:
                marked_empty += 1
                continue
            case = self._case(image_id, files[image_id], masks[image_id])
            if case is not None:
                cases.append(case)

        without_row = sorted(set(files) - set(masks))
        for image_id in without_row:
            logger.debug("SIIM: skipped %s: no row in %s", files[image_id], RLE_CSV)
        logger.debug("SIIM: ignored %d %s rows without a DICOM file", len(set(masks) - set(files)), RLE_CSV)
        logger.info(
            "SIIM: %d cases with pneumothorax among %d DICOM files (%d marked %s, %d without a %s row)",
            len(cases), len(files), marked_empty, EMPTY_MASK_RLE, len(without_row), RLE_CSV,
        )
        return cases

    def load(self, case: Case) -> dict[str, Sample]:
        """Decode the DICOM image and the union of its RLE masks.

        Returns:
            ``{"image": Sample}`` with the ``uint8`` (Rows, Columns) image from
            :func:`builder.dicom.read_dicom_image` and a ``bool`` mask of the
            same shape, True on pneumothorax pixels.

        Raises:
            BadInputError: naming the DICOM file when it cannot be decoded, or
                the CSV file and ImageId when an RLE value does not fit the image.
        """
        relative = case.files[0]
        encoded = case.metadata.get("encoded_pixels")
        if not encoded:
            raise ValueError(
                f"Case {case.case_id} has no 'encoded_pixels' metadata; pass a case returned by SIIMReader.list_cases"
            )
        image = read_dicom_image(resolve_inside(self.root, relative, self.root))

        height, width = image.shape
        mask = np.zeros((height, width), dtype=bool)
        for text in encoded:
            try:
                mask |= decode_rle(text, height, width)
            except ValueError as error:
                raise BadInputError(self.csv_path, f"ImageId {case.case_id}: {error}") from error

        return {VIEW: Sample(image=image, mask=mask, slice_index=-1, source_file=relative)}

    def _read_rle_table(self) -> dict[str, tuple[str, ...]]:
        """Group the RLE strings by ImageId, with an empty tuple for an ImageId marked ``-1``.

        An ImageId with both ``-1`` and a mask row is reported and left out.
        """
        grouped: dict[str, list[str]] = defaultdict(list)
        for row in read_csv_rows(self.csv_path, ("ImageId", "EncodedPixels")):
            grouped[row["ImageId"].strip()].append(row["EncodedPixels"].strip())

        masks = {}
        for image_id, values in grouped.items():
            marked_empty = EMPTY_MASK_RLE in values
            if marked_empty and len(set(values)) > 1:
                self.bad_inputs.report(
                    self.name, self.csv_path, f"ImageId {image_id} has both a {EMPTY_MASK_RLE!r} row and a mask row"
                )
            else:
                masks[image_id] = () if marked_empty else tuple(values)
        return masks

    def _find_dicom_files(self) -> dict[str, Path]:
        """Find every ``.dcm`` file under the root and key it by its stem (the ImageId)."""
        files: dict[str, Path] = {}
        for folder, _, names in sorted(os.walk(self.root)):
            for file_name in sorted(names):
                path = Path(folder) / file_name
                if path.suffix.lower() != ".dcm":
                    continue
                if path.stem in files:
                    self.bad_inputs.report(
                        self.name, path, f"ImageId {path.stem} is also the file {files[path.stem]}; keep one copy"
                    )
                    continue
                files[path.stem] = path
        return files

    def _case(self, image_id: str, path: Path, values: tuple[str, ...]) -> Case | None:
        """Build the case of one masked image, or return None when its header or RLE is invalid."""
        try:
            header = read_dicom_header(path)
            height, width = int(header.Rows), int(header.Columns)
        except BadInputError as error:
            self.bad_inputs.report(self.name, path, error.reason)
            return None
        except (AttributeError, TypeError):
            # AttributeError: the element is absent. TypeError: it is present without a value.
            self.bad_inputs.report(self.name, path, "no (0028,0010) Rows or (0028,0011) Columns in the DICOM header")
            return None

        try:
            area = sum(rle_area(text, height, width) for text in values)
        except ValueError as error:
            self.bad_inputs.report(self.name, self.csv_path, f"ImageId {image_id}: {error}")
            return None
        if area == 0:
            logger.debug("SIIM: skipped %s: its RLE rows encode an empty mask", path)
            return None

        patient = str(header.get("PatientID", "") or "").strip()
        metadata = {"encoded_pixels": values, "rows": height, "columns": width}
        relative = path.relative_to(self.root).as_posix()
        item = ItemSpec(ITEM_KEY, XRAY_LUNG_SEGMENTATION, VIEW)
        return Case(self.name, image_id, patient or image_id, (relative,), (item,), metadata)
