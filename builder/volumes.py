"""NIfTI volumes: canonical orientation, axial display, intensity windows and slice choice.

Every volume is reoriented to the closest canonical orientation (RAS+: the
first array axis increases towards the patient's Right, the second towards
Anterior, the third towards Superior), so ``data[:, :, k]`` is the axial slice
``k`` counted from the feet. :func:`axial_slice_radiological` turns such a slice
into an image in the radiological convention used by every CrossMed image.

Slice choice is deterministic: :func:`top_slices` ranks slices by an area per
slice (tumour voxels for BraTS, lung voxels for MosMedData, see
:func:`lung_area_per_slice`) and keeps the largest ones a minimum gap apart.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Mapping

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import SpatialImage
from scipy import ndimage

from builder.imaging import scale_to_uint8
from builder.policy import BadInputError

logger = logging.getLogger(__name__)

# Errors nibabel 5.4 raises for a damaged file: ImageFileError for an empty or
# unrecognized header, EOFError for a truncated .nii.gz, zlib.error for corrupt
# deflate data, and OSError for a truncated .nii ("Expected N bytes, got M
# bytes"), a missing file or a file that is not gzip.
NIFTI_READ_ERRORS: tuple[type[BaseException], ...] = (ImageFileError, EOFError, zlib.error, OSError)

MRI_PERCENTILES: tuple[float, float] = (0.5, 99.5)

# Lung window: center -600 HU, width 1500 HU, so -1350 HU is black and 150 HU white.
LUNG_WINDOW_CENTER_HU = -600.0
LUNG_WINDOW_WIDTH_HU = 1500.0

# Voxels counted as lung parenchyma by lung_area_per_slice, in HU.
LUNG_HU_RANGE: tuple[float, float] = (-1000.0, -400.0)

LABEL_TOLERANCE = 1e-3

DEFAULT_SLICES_PER_VOLUME = 3
DEFAULT_MIN_SLICE_GAP = 5

# In-plane connectivity only: components never join across axial slices.
_IN_PLANE_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_STRUCTURE[:, :, 1] = ndimage.generate_binary_structure(2, 1)


def load_canonical(path: str | os.PathLike[str]) -> SpatialImage:
    """Read a NIfTI file, reorient it to RAS+ and load its voxels into memory.

    The voxels are read here, not lazily, so that a damaged file fails in this
    call with the file named. Scaled files (``scl_slope``/``scl_inter`` set)
    come back scaled, as float64; unscaled files keep their stored dtype.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.

    Returns:
        An in-memory image whose array axes are RAS+ (see the module docstring)
        and whose affine maps voxel indices to scanner millimetres.

    Raises:
        BadInputError: naming the file when it is missing, empty, truncated or
            not a NIfTI file.
    """
    try:
        image = nib.load(os.fspath(path))
        canonical = nib.as_closest_canonical(image)
        data = np.asanyarray(canonical.dataobj)
    except NIFTI_READ_ERRORS as error:
        raise BadInputError(
            path, f"cannot read the NIfTI volume ({type(error).__name__}: {error}); download the file again"
        ) from error

    return canonical.__class__(data, canonical.affine, canonical.header)


def volume_array(image: SpatialImage, path: str | os.PathLike[str]) -> np.ndarray:
    """Return the voxels of a 3D image, dropping a trailing axis of length 1.

    Args:
        image: An image from :func:`load_canonical`.
        path: The file it came from, named in the error.

    Returns:
        A 3D array (X, Y, Z) in the image's axis order and dtype.

    Raises:
        BadInputError: when the image is not 3D (a 4D image with one volume is accepted).
    """
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[:, :, :, 0]
    if data.ndim != 3:
        raise BadInputError(path, f"expected a 3D volume, got shape {data.shape}")
    return data


def axial_slice_radiological(volume_ras: np.ndarray, k: int) -> np.ndarray:
    """Cut axial slice ``k`` out of a RAS+ volume and orient it for display.

    The radiological convention shows the patient as if facing the viewer:
    patient right on the image left and anterior at the top. A RAS+ slice
    ``data[:, :, k]`` has shape (X, Y) with X towards Right and Y towards
    Anterior, so it is transposed to (Y, X) and flipped along both axes.

    Args:
        volume_ras: A 3D array in RAS+ axis order, e.g. from :func:`load_canonical`.
        k: The axial slice index, 0 being the most inferior slice.

    Returns:
        A 2D array of shape (Y, X), same dtype: row 0 is the most anterior row,
        column 0 the rightmost column of the patient. It is a view of the input.

    Raises:
        IndexError: when ``k`` is outside ``0 .. Z-1``.
    """
    depth = volume_ras.shape[2]
    if not 0 <= k < depth:
        raise IndexError(f"axial slice index {k} is outside 0..{depth - 1} of a volume of shape {volume_ras.shape}")
    return volume_ras[:, :, k].T[::-1, ::-1]


def robust_scale_mri(
    volume: np.ndarray, brain_mask: np.ndarray | None = None, name: str = ""
) -> np.ndarray:
    """Scale an MRI volume to 8 bit between its 0.5th and 99.5th brain-voxel percentiles.

    MRI intensities have no absolute unit, and a few very bright voxels
    (vessels, artefacts) would darken a min-max scaling, so the window comes
    from percentiles over the brain. Values outside the window are clipped.
    This is :func:`scale_mri` applied to the whole volume with the window of
    :func:`mri_window`.

    Args:
        volume: A 3D array of any real dtype.
        brain_mask: A boolean array of the same shape marking brain voxels.
            Default: the nonzero voxels, which is the brain in skull-stripped
            data such as BraTS.
        name: The file name, used in the warning about non-finite voxels.

    Returns:
        A ``uint8`` array of the same shape. NaN and infinite voxels are 0.
        All zeros when the mask selects no voxel.
    """
    return scale_mri(volume, mri_window(volume, brain_mask, name))


def mri_window(
    volume: np.ndarray, brain_mask: np.ndarray | None = None, name: str = ""
) -> tuple[float, float] | None:
    """Return the 0.5th and 99.5th percentiles of the brain voxels of an MRI volume.

    Non-finite voxels count as 0, so they are outside the default brain mask.
    Only the brain voxels are converted to float64, so the volume is not
    copied whole.

    Args:
        volume: A 3D array of any real dtype.
        brain_mask: A boolean array of the same shape marking brain voxels.
            Default: the nonzero finite voxels.
        name: The file name, used in the warnings.

    Returns:
        ``(low, high)`` in the volume's intensity unit, or None when the mask
        selects no voxel (a warning is logged).
    """
    data = np.asarray(volume)
    finite = None
    if data.dtype.kind not in "iub":
        finite = np.isfinite(data)
        if finite.all():
            finite = None
        else:
            logger.warning("%s: %d NaN or infinite voxels shown as 0", name or "MRI volume", int((~finite).sum()))

    mask = data != 0 if brain_mask is None else np.asarray(brain_mask, dtype=bool)
    if finite is not None:
        mask = mask & finite
    brain = data[mask].astype(np.float64)
    if brain.size == 0:
        logger.warning("%s: no brain voxels to scale; the volume is shown black", name or "MRI volume")
        return None

    low, high = np.percentile(brain, MRI_PERCENTILES)
    return float(low), float(high)


def scale_mri(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Scale MRI voxels (a volume or one of its slices) to 8 bit with a window from :func:`mri_window`.

    Args:
        values: Any real-valued array.
        window: ``(low, high)``, or None to return all zeros.

    Returns:
        A C-contiguous ``uint8`` array of the same shape. NaN and infinite values are 0.
    """
    data = np.asarray(values, dtype=np.float64)
    if window is None:
        return np.zeros(data.shape, dtype=np.uint8)

    finite = np.isfinite(data)
    if not finite.all():
        data = np.where(finite, data, 0.0)
    return np.ascontiguousarray(scale_to_uint8(data, *window))


def lung_window(hu: np.ndarray) -> np.ndarray:
    """Map Hounsfield units to 8 bit with the lung window (center -600 HU, width 1500 HU).

    Args:
        hu: CT values in HU, i.e. nibabel's scaled data with ``scl_slope`` and
            ``scl_inter`` applied. Any shape.

    Returns:
        A ``uint8`` array of the same shape: -1350 HU and below are 0, 150 HU
        and above are 255, NaN is 0.
    """
    low = LUNG_WINDOW_CENTER_HU - LUNG_WINDOW_WIDTH_HU / 2
    high = LUNG_WINDOW_CENTER_HU + LUNG_WINDOW_WIDTH_HU / 2
    return scale_to_uint8(hu, low, high)


def label_volume(image: SpatialImage, path: str | os.PathLike[str]) -> np.ndarray:
    """Read a segmentation volume as ``uint8`` labels.

    Some tools save label maps as float with rounding noise (3.9999998 for 4).
    Values within 1e-3 of an integer are rounded to it; anything else is not a
    label map.

    Args:
        image: An image from :func:`load_canonical`.
        path: The file it came from, named in errors.

    Returns:
        A 3D ``uint8`` array in the image's axis order.

    Raises:
        BadInputError: when a value is NaN, lies farther than 1e-3 from an
            integer, or is outside 0..255.
    """
    data = volume_array(image, path)
    if data.dtype.kind == "f":
        rounded = np.rint(data)
        error = np.abs(data - rounded)
        if np.isnan(error).any():
            raise BadInputError(path, "the label volume contains NaN; expected integer labels")
        worst = np.unravel_index(int(np.argmax(error)), error.shape)
        if error[worst] > LABEL_TOLERANCE:
            raise BadInputError(
                path,
                f"label value {float(data[worst])!r} at voxel {tuple(int(i) for i in worst)} is not an integer "
                f"(tolerance {LABEL_TOLERANCE}); expected a label map",
            )
        data = rounded
    elif data.dtype.kind not in "iub":
        raise BadInputError(path, f"label volume has dtype {data.dtype}; expected integer or float labels")

    if data.size and (data.min() < 0 or data.max() > 255):
        raise BadInputError(
            path, f"label values span {data.min()}..{data.max()}; expected labels between 0 and 255"
        )
    return data.astype(np.uint8)


def area_per_slice(mask: np.ndarray) -> np.ndarray:
    """Count the true voxels of each axial slice of a RAS+ boolean volume.

    Returns:
        An ``int64`` array of length Z, in voxels (not mm²).
    """
    return np.count_nonzero(mask, axis=(0, 1)).astype(np.int64)


def lung_area_per_slice(hu: np.ndarray) -> np.ndarray:
    """Estimate the lung area of each axial slice of a RAS+ CT volume.

    A voxel counts as lung when its value is in [-1000, -400] HU and it lies
    inside the body. "Outside the body" is the air that reaches the slice edge:
    the connected components, within one axial slice and with 4-connectivity,
    of voxels below -400 HU that touch the slice border. Air inside the body
    that is not lung (trachea, bowel gas) is counted too, which is acceptable
    for ranking slices.

    Args:
        hu: A 3D array of Hounsfield units in RAS+ axis order.

    Returns:
        An ``int64`` array of length Z, in voxels.
    """
    low_density = hu < LUNG_HU_RANGE[1]
    labels, _ = ndimage.label(low_density, structure=_IN_PLANE_STRUCTURE)

    border = np.concatenate(
        [labels[0, :, :].ravel(), labels[-1, :, :].ravel(), labels[:, 0, :].ravel(), labels[:, -1, :].ravel()]
    )
    outside = np.isin(labels, np.unique(border[border > 0]))

    lung = low_density & ~outside & (hu >= LUNG_HU_RANGE[0])
    return area_per_slice(lung)


def slice_options(options: Mapping[str, object]) -> tuple[int, int]:
    """Read the slice-choice options shared by the volume readers.

    Args:
        options: Reader options. ``slices_per_volume`` (default 3) is the
            number of axial slices, hence question ranks, per volume;
            ``min_slice_gap`` (default 5) the minimum distance between them, in slices.

    Returns:
        ``(slices_per_volume, min_slice_gap)``.

    Raises:
        ValueError: naming the option when it is not an integer, or
            ``slices_per_volume`` is below 1, or ``min_slice_gap`` is negative.
    """
    count = _integer_option(options, "slices_per_volume", DEFAULT_SLICES_PER_VOLUME, minimum=1)
    gap = _integer_option(options, "min_slice_gap", DEFAULT_MIN_SLICE_GAP, minimum=0)
    return count, gap


def _integer_option(options: Mapping[str, object], name: str, default: int, minimum: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Invalid {name} {value!r}: expected an integer of at least {minimum}")
    return value


def top_slices(areas: np.ndarray, count: int, min_gap: int) -> list[int]:
    """Pick the slices with the largest area, at least ``min_gap`` slices apart.

    Slices are taken greedily in order of decreasing area; ties go to the lower
    index. A slice closer than ``min_gap`` to one already taken is passed over.
    Zero-area slices can be picked, so callers that need a nonzero area filter
    the result.

    Args:
        areas: The area of each slice (any unit), indexed by slice.
        count: The number of slices wanted.
        min_gap: The minimum distance between two picked indices, in slices.
            0 and 1 both only forbid picking a slice twice.

    Returns:
        Up to ``count`` slice indices, largest area first. Fewer when the
        volume has too few slices for the gap. A one-slice volume gives ``[0]``.

    Raises:
        ValueError: when ``count`` is below 1 or ``min_gap`` is negative.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if min_gap < 0:
        raise ValueError(f"min_gap must be 0 or more, got {min_gap}")

    values = np.asarray(areas)
    # A stable sort on -area keeps equal areas in index order.
    order = np.argsort(-values, kind="stable")

    picked: list[int] = []
    for index in order.tolist():
        if all(abs(index - other) >= max(min_gap, 1) for other in picked):
            picked.append(index)
        if len(picked) == count:
            break
    return picked


def read_geometry(path: str | os.PathLike[str]) -> dict[str, tuple]:
    """Read the voxel grid of a NIfTI file from its header, without reading voxels.

    The values describe the file as stored, before any reorientation.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.

    Returns:
        ``{"shape": (int, ...), "spacing": (float, ...), "orientation": (str, str, str)}``:
        the array shape, the voxel size in mm of each spatial axis, and the
        nibabel axis codes of the affine (e.g. ``("L", "A", "S")``: the first
        axis increases towards Left).

    Raises:
        BadInputError: naming the file when the header cannot be read.
    """
    try:
        image = nib.load(os.fspath(path))
    except NIFTI_READ_ERRORS as error:
        raise BadInputError(
            path, f"cannot read the NIfTI header ({type(error).__name__}: {error}); download the file again"
        ) from error
    if not isinstance(image, SpatialImage):
        raise BadInputError(path, f"{type(image).__name__} is not a volume image; expected a NIfTI file")

    spatial = min(len(image.shape), 3)
    return {
        "shape": tuple(int(size) for size in image.shape),
        "spacing": tuple(float(size) for size in image.header.get_zooms()[:spatial]),
        "orientation": tuple(nib.aff2axcodes(image.affine)),
    }

