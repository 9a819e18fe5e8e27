"""Read 2D X-ray DICOM files as 8-bit grayscale images for display.

The grayscale pipeline follows DICOM PS3.3 C.11 and PS3.4 N.2.1. Stored values
go through the Modality LUT (or Rescale Slope/Intercept), then the VOI LUT or
the window. MONOCHROME1 images are inverted after that. The result is scaled
to 0-255 in float, so 12 or 16-bit data never wrap around.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from builder.imaging import scale_to_uint8
from builder.policy import BadInputError

logger = logging.getLogger(__name__)

_PIXEL_KEYWORDS: tuple[str, ...] = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

_DECODER_HINT = (
    "install a pydicom decoder plugin: pylibjpeg with pylibjpeg-libjpeg "
    "(pip install pylibjpeg pylibjpeg-libjpeg; add pylibjpeg-openjpeg for JPEG 2000) "
    "or GDCM (pip install python-gdcm)"
)


def read_dicom_header(path: str | os.PathLike[str]) -> Dataset:
    """Read the DICOM data elements before Pixel Data, without decoding pixels.

    Args:
        path: A DICOM Part 10 file (with the 128-byte preamble and ``DICM``).

    Returns:
        The pydicom Dataset, with ``file_meta`` and every element before
        (7FE0,0010) Pixel Data, e.g. Rows, Columns and PatientID.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        BadInputError: naming the file when it is not a readable DICOM file.
    """
    return _read_dataset(Path(path), stop_before_pixels=True)


def read_dicom_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a single-frame grayscale DICOM image and scale it for display.

    The stored values are decoded first, compressed transfer syntaxes through
    pydicom's decoder plugins. Then the Modality LUT or Rescale Slope/Intercept
    applies, then the first VOI LUT or window (Window Center/Width with its VOI
    LUT Function). MONOCHROME1 is inverted next. Last, the output range of the
    VOI step maps linearly onto 0-255. That range is the nominal one from the
    header, not the image minimum and maximum, so an 8-bit MONOCHROME2 image
    without a window keeps its values.

    Args:
        path: A DICOM Part 10 file with one frame and Samples per Pixel 1.

    Returns:
        A ``uint8`` array of shape (Rows, Columns), indexed [row, column] as
        stored, with white for the highest displayed value.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        BadInputError: naming the file when it is not DICOM, has no pixel data,
            fails to decode, or is not a single 2D grayscale frame. For a
            transfer syntax without an installed decoder, the message also
            names the syntax, its UID and the packages to install.
    """
    file_path = Path(path)
    dataset = _read_dataset(file_path, stop_before_pixels=False)
    _check_pixel_data(dataset, file_path)
    _check_decoder(dataset, file_path)

    stored = _decode_pixels(dataset, file_path)
    displayed = _apply_luts(stored, dataset, file_path)

    low, high = _display_range(dataset)
    logger.debug("Read %s: %s, display range %s to %s", file_path, dataset.file_meta.TransferSyntaxUID.name, low, high)
    if _photometric(dataset) == "MONOCHROME1":
        # MONOCHROME1 shows the minimum as white. PS3.4 N.2.1 inverts after the
        # VOI transform, so the window still applies to the stored polarity.
        displayed = (low + high) - displayed
    return scale_to_uint8(displayed, low, high)


def _read_dataset(path: Path, stop_before_pixels: bool) -> Dataset:
    if not path.is_file():
        raise FileNotFoundError(f"DICOM file not found: {path}")

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as error:
        raise BadInputError(path, f"not a DICOM Part 10 file ({error})") from error
    except (EOFError, OSError) as error:
        raise BadInputError(path, f"failed to read the DICOM file ({error}); the file may be truncated") from error


def _check_pixel_data(dataset: Dataset, path: Path) -> None:
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        raise BadInputError(
            path,
            "no (7FE0,0010) Pixel Data element, so the file contains no image",
        )

    photometric = _photometric(dataset)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise BadInputError(
            path,
            f"(0028,0004) Photometric Interpretation is {photometric!r}; expected MONOCHROME1 or MONOCHROME2",
        )

    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise BadInputError(path, f"(0028,0008) Number of Frames is {frames}; expected a single-frame image")


def _check_decoder(dataset: Dataset, path: Path) -> None:
    file_meta = getattr(dataset, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not syntax:
        raise BadInputError(path, "no (0002,0010) Transfer Syntax UID in the file meta information")

    uid = UID(syntax)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as error:
        raise BadInputError(path, f"transfer syntax {uid.name} ({uid}) is not supported by pydicom") from error

    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise BadInputError(
            path,
            f"no installed decoder for transfer syntax {uid.name} ({uid}); {_DECODER_HINT}. "
            f"pydicom lists: {missing}",
        )


def _decode_pixels(dataset: Dataset, path: Path) -> np.ndarray:
    try:
        stored = dataset.pixel_array
    except (AttributeError, NotImplementedError, RuntimeError, ValueError) as error:
        # pydicom raises AttributeError for a missing image pixel tag (Rows, Bits
        # Allocated, ...), ValueError for a size mismatch and RuntimeError when
        # every decoder plugin failed on the compressed data.
        syntax = dataset.file_meta.TransferSyntaxUID
        raise BadInputError(path, f"failed to decode the {syntax.name} pixel data ({error})") from error

    if stored.ndim != 2:
        raise BadInputError(path, f"decoded pixel data has shape {stored.shape}; expected a 2D grayscale image")
    return stored


def _apply_luts(stored: np.ndarray, dataset: Dataset, path: Path) -> np.ndarray:
    try:
        modality = apply_modality_lut(stored, dataset)
        return np.asarray(apply_voi_lut(modality, dataset), dtype=np.float64)
    except (AttributeError, NotImplementedError, TypeError, ValueError) as error:
        # pydicom raises ValueError for a Window Width below 1 or an unknown VOI
        # LUT Function, NotImplementedError for an unsupported LUT bit depth, and
        # AttributeError when it cannot tell the byte order of OW LUT Data. An
        # empty Rescale Slope makes its arithmetic raise TypeError.
        raise BadInputError(path, f"invalid Modality LUT, VOI LUT or window ({error})") from error


def _display_range(dataset: Dataset) -> tuple[float, float]:
    """Return the (min, max) value that the VOI step of ``read_dicom_image`` can output.

    With a VOI LUT the output is ``0 .. 2**bits - 1`` for the LUT Descriptor's
    third value. Otherwise the range is that of the Modality LUT output, which
    pydicom 3.0 windowing also uses as its output range. That is the Modality
    LUT's bit depth, or the stored bit range mapped through Rescale Slope and
    Intercept.
    """
    voi_sequence = dataset.get("VOILUTSequence")
    if voi_sequence and "LUTDescriptor" in voi_sequence[0] and "LUTData" in voi_sequence[0]:
        return 0.0, float(2 ** int(voi_sequence[0].LUTDescriptor[2]) - 1)

    modality_sequence = dataset.get("ModalityLUTSequence")
    if modality_sequence:
        return 0.0, float(2 ** int(modality_sequence[0].LUTDescriptor[2]) - 1)

    bits = int(dataset.BitsStored)
    if int(dataset.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)

    # pydicom 3.0 rescales only when both Rescale Slope and Rescale Intercept have a value.
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is None or intercept is None:
        return low, high
    slope, intercept = float(slope), float(intercept)
    ends = (low * slope + intercept, high * slope + intercept)
    return min(ends), max(ends)


def _photometric(dataset: Dataset) -> str:
    return str(dataset.get("PhotometricInterpretation", "")).strip().upper()
