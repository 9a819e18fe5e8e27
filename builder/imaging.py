"""Intensity scaling to 8 bit and lossless PNG encoding, shared by every source."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def scale_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly onto 0-255 and clip outside it.

    The arithmetic runs in float64, so 12- or 16-bit inputs never wrap around.
    NaN values become 0.

    Args:
        values: Any real-valued array.
        low: The value shown as black.
        high: The value shown as white. When ``high <= low`` the result is all 0.

    Returns:
        A ``uint8`` array of the same shape.
    """
    data = np.asarray(values, dtype=np.float64)
    if not high > low:
        return np.zeros(data.shape, dtype=np.uint8)

    scaled = (data - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def encode_png(array: np.ndarray) -> bytes:
    """Encode a 2D ``uint8`` array (grayscale) or an (H, W, 3) ``uint8`` array (RGB) as PNG bytes.

    Raises:
        ValueError: when the dtype is not ``uint8`` or the shape is neither.
    """
    if array.dtype != np.uint8:
        raise ValueError(f"PNG encoding expects a uint8 array, got {array.dtype}; scale it with scale_to_uint8 first")
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[2] == 3:
        mode = "RGB"
    else:
        raise ValueError(f"PNG encoding expects shape (H, W) or (H, W, 3), got {array.shape}")

    buffer = io.BytesIO()
    # compress_level 6 is PIL's zlib default; a fixed value keeps the bytes identical across runs.
    Image.fromarray(array, mode=mode).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encode a boolean mask as an 8-bit grayscale PNG with 0 outside and 255 inside.

    255 rather than 1 makes the mask visible in image viewers, the Hub viewer
    among them. Read it back with ``np.asarray(image) > 0``.
    """
    return encode_png(np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8))


def resize_longest_side(image: np.ndarray, mask: np.ndarray | None, max_side: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Shrink an image (area filter) and its mask (nearest neighbour) so the longest side is ``max_side``.

    Images already within the limit, or ``max_side=None``, are returned unchanged.
    """
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return image, mask

    factor = max_side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    if mask is None:
        return resized, None
    mask_image = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    resized_mask = np.asarray(mask_image.resize(size, Image.Resampling.NEAREST)) > 0
    return resized, resized_mask
