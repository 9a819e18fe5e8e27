"""Tests for reading X-ray DICOM files as 8-bit display images.

The files are written with pydicom in tmp_path, except the real SIIM-ACR sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from builder.dicom import read_dicom_header, read_dicom_image
from builder.policy import BadInputError

SIIM_SAMPLE = (
    "siim/dicom-images-train/1.2.276.0.7230010.3.1.2.8323329.6904.1517875201.850818/"
    "1.2.276.0.7230010.3.1.3.8323329.6904.1517875201.850817/"
    "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
)


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    bits_stored: int = 8,
    photometric: str = "MONOCHROME2",
    patient_id: str | None = "patient-1",
    **elements: object,
) -> Path:
    """Write an uncompressed single-frame grayscale DICOM file and return its path.

    Args:
        path: The file to write; its stem becomes the SOP Instance UID when it is a UID.
        pixels: A 2D ``uint8`` or ``uint16`` array, or None for a file without Pixel Data.
        bits_stored: Bits Stored; Bits Allocated follows the array dtype.
        photometric: Photometric Interpretation.
        patient_id: Patient ID, or None to leave the element out.
        elements: Further data elements by keyword, e.g. ``WindowCenter=1000``.
    """
    dataset = _base_dataset(path, ExplicitVRLittleEndian)
    dataset.PhotometricInterpretation = photometric
    dataset.BitsStored = bits_stored
    dataset.HighBit = bits_stored - 1
    if patient_id is not None:
        dataset.PatientID = patient_id
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)

    rows, columns = (4, 5) if pixels is None else pixels.shape
    dataset.Rows, dataset.Columns = rows, columns
    dataset.BitsAllocated = 8 if pixels is None or pixels.dtype == np.uint8 else 16
    if pixels is not None:
        dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()

    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def write_encapsulated_dicom(path: Path, transfer_syntax: str, fragment: bytes) -> Path:
    """Write an 8-bit 4 x 5 DICOM file that declares a compressed transfer syntax."""
    dataset = _base_dataset(path, transfer_syntax)
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = 4, 5
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelData = encapsulate([fragment])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(path, enforce_file_format=True)
    return path


def _base_dataset(path: Path, transfer_syntax: str) -> Dataset:
    stem = path.stem if all(part.isdigit() for part in path.stem.split(".")) else generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = stem
    meta.TransferSyntaxUID = transfer_syntax

    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = stem
    dataset.Modality = "CR"
    dataset.SamplesPerPixel = 1
    dataset.PixelRepresentation = 0
    return dataset


def test_read_dicom_image_8bit_unchanged(tmp_path: Path) -> None:
    pixels = np.arange(20, dtype=np.uint8).reshape(4, 5) * 13
    path = write_dicom(tmp_path / "plain.dcm", pixels)

    image = read_dicom_image(path)

    assert image.dtype == np.uint8
    assert np.array_equal(image, pixels)


def test_read_dicom_image_12bit_in_16(tmp_path: Path) -> None:
    pixels = np.array([[0, 256, 2048, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "twelve.dcm", pixels, bits_stored=12)

    image = read_dicom_image(path)

    # A plain uint8 cast would wrap 256 to 0 and 4095 to 255 by accident.
    assert image.dtype == np.uint8
    assert image.tolist() == [[0, 16, 128, 255]]


def test_read_dicom_image_window(tmp_path: Path) -> None:
    pixels = np.array([[0, 900, 1000, 1100, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "window.dcm", pixels, bits_stored=12, WindowCenter=1000, WindowWidth=200)

    image = read_dicom_image(path)

    assert image[0, 0] == 0
    assert image[0, 1] == 0
    assert 126 <= image[0, 2] <= 129
    assert image[0, 3] == 255
    assert image[0, 4] == 255


def test_read_dicom_image_monochrome1_inverts_after_window(tmp_path: Path) -> None:
    pixels = np.array([[500, 1000, 3000]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "mono1.dcm", pixels, bits_stored=12, photometric="MONOCHROME1", WindowCenter=1000, WindowWidth=200
    )

    image = read_dicom_image(path)

    # Inverting the stored values first would put 3000 at 4095 - 3000 = 1095,
    # inside the window (about 249), instead of black.
    assert image[0, 0] == 255
    assert 126 <= image[0, 1] <= 129
    assert image[0, 2] == 0


def test_read_dicom_image_monochrome1_without_window(tmp_path: Path) -> None:
    pixels = np.array([[0, 255]], dtype=np.uint8)
    path = write_dicom(tmp_path / "mono1.dcm", pixels, photometric="MONOCHROME1")

    image = read_dicom_image(path)

    assert image.tolist() == [[255, 0]]


def test_read_dicom_image_rescale_before_window(tmp_path: Path) -> None:
    pixels = np.array([[400, 600, 800]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "rescale.dcm",
        pixels,
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=200,
        WindowWidth=100,
    )

    image = read_dicom_image(path)

    # Modality values are -200, 200 and 600: below, at the centre of, and above the window.
    assert image[0, 0] == 0
    assert 126 <= image[0, 1] <= 129
    assert image[0, 2] == 255


def test_read_dicom_image_voi_lut_sequence(tmp_path: Path) -> None:
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [4, 0, 8])
    lut.add_new("LUTData", "US", [0, 100, 200, 255])
    path = write_dicom(tmp_path / "lut.dcm", np.array([[0, 1, 2, 3]], dtype=np.uint8), VOILUTSequence=[lut])

    image = read_dicom_image(path)

    assert image.tolist() == [[0, 100, 200, 255]]


def test_read_dicom_image_invalid_window(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "width0.dcm", np.zeros((2, 2), dtype=np.uint8), WindowCenter=100, WindowWidth=0)

    with pytest.raises(BadInputError, match=r"width0\.dcm: invalid Modality LUT, VOI LUT or window .*Window Width"):
        read_dicom_image(path)


def test_read_dicom_image_missing_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "header-only.dcm", None)

    with pytest.raises(BadInputError, match=r"header-only\.dcm: no \(7FE0,0010\) Pixel Data"):
        read_dicom_image(path)


def test_read_dicom_image_missing_decoder(tmp_path: Path) -> None:
    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder plugin is installed, so the missing-decoder error cannot occur")
    path = write_encapsulated_dicom(tmp_path / "lossless.dcm", JPEGLosslessSV1, b"\xff\xd8\xff\xd9")

    with pytest.raises(BadInputError) as caught:
        read_dicom_image(path)

    message = str(caught.value)
    assert str(path) in message
    assert "1.2.840.10008.1.2.4.70" in message
    assert "JPEG Lossless" in message
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in message
    assert "pip install python-gdcm" in message


def test_read_dicom_image_corrupt_jpeg(tmp_path: Path) -> None:
    if not get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("no JPEG Baseline decoder plugin (Pillow, pylibjpeg or GDCM) is installed")
    path = write_encapsulated_dicom(tmp_path / "corrupt.dcm", JPEGBaseline8Bit, b"\xff\xd8not a jpeg")

    with pytest.raises(BadInputError, match=r"corrupt\.dcm: failed to decode the JPEG Baseline"):
        read_dicom_image(path)


def test_read_dicom_image_rejects_rgb(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "colour.dcm", np.zeros((2, 2), dtype=np.uint8), photometric="PALETTE COLOR")

    with pytest.raises(BadInputError, match=r"colour\.dcm: .*Photometric Interpretation is 'PALETTE COLOR'"):
        read_dicom_image(path)


def test_read_dicom_image_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("not a DICOM file")

    with pytest.raises(BadInputError, match=r"notes\.dcm: not a DICOM Part 10 file"):
        read_dicom_image(path)


def test_read_dicom_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"DICOM file not found: .*absent\.dcm"):
        read_dicom_image(tmp_path / "absent.dcm")


def test_read_dicom_image_truncated(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "full.dcm", np.zeros((4, 5), dtype=np.uint8))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(path.read_bytes()[:-5])

    with pytest.raises(BadInputError, match=r"truncated\.dcm: failed to decode"):
        read_dicom_image(truncated)


def test_read_dicom_header_skips_pixels(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "header.dcm", np.zeros((6, 7), dtype=np.uint8), patient_id="p-42")

    header = read_dicom_header(path)

    assert (header.Rows, header.Columns) == (6, 7)
    assert header.PatientID == "p-42"
    assert "PixelData" not in header


def test_read_dicom_header_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")

    with pytest.raises(BadInputError, match=r"empty\.dcm: not a DICOM Part 10 file"):
        read_dicom_header(path)


def test_read_dicom_image_siim_sample(samples_dir: Path) -> None:
    path = samples_dir / SIIM_SAMPLE

    image = read_dicom_image(path)

    assert image.dtype == np.uint8
    assert image.shape == (1024, 1024)
    # The sample is 8-bit MONOCHROME2 without a window, so its values are kept.
    assert np.array_equal(image, pydicom.dcmread(path).pixel_array)
