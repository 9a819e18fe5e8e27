"""Seeded pixel phantoms: frontal and lateral chest radiographs, brain MRI and chest CT.

Every function draws only from the ``numpy.random.Generator`` it is given, so one
generator state gives the same arrays on every run. The phantoms are cartoons:
they have the anatomy and the findings that the labels name, at the contrasts
the readers expect, but they are not meant to look like real patients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from builder.sources.chexpert import OBSERVATIONS

# The 14 CheXpert observations, all of which chest_radiograph can draw.
CHEST_FINDINGS: tuple[str, ...] = OBSERVATIONS

MRI_SEQUENCES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
TUMOUR_GRADES: tuple[str, ...] = ("HGG", "LGG")

# BraTS 2020 segmentation labels.
NECROTIC_CORE = 1
OEDEMA = 2
ENHANCING_TUMOUR = 4

# Tissue codes of the brain phantom, used only inside this module.
_BACKGROUND, _SKULL, _CSF, _GREY, _WHITE, _OEDEMA, _ENHANCING, _CORE = range(8)

# Mean intensity of each tissue code per sequence, in arbitrary scanner units.
# CSF is dark on FLAIR and T1 and bright on T2. Oedema is brightest on FLAIR, and
# the enhancing rim is bright only on T1ce, because gadolinium enhances it.
_MRI_INTENSITY: dict[str, tuple[float, ...]] = {
    "flair": (0.0, 150.0, 90.0, 470.0, 360.0, 820.0, 600.0, 420.0),
    "t1": (0.0, 300.0, 150.0, 420.0, 560.0, 330.0, 400.0, 180.0),
    "t1ce": (0.0, 300.0, 160.0, 430.0, 570.0, 340.0, 900.0, 190.0),
    "t2": (0.0, 200.0, 950.0, 560.0, 380.0, 800.0, 520.0, 880.0),
}

# Hounsfield units of the CT phantom.
AIR_HU = -1000.0
LUNG_HU = -850.0
GROUND_GLASS_HU = -500.0
CONSOLIDATION_HU = -150.0
SOFT_TISSUE_HU = 40.0
FAT_HU = -100.0
BONE_HU = 600.0

_PARENCHYMAL = ("Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis")


@dataclass(frozen=True)
class Radiograph:
    """A chest radiograph phantom.

    Attributes:
        image: ``uint8`` array (rows, columns); bright is dense, as in MONOCHROME2.
            Frontal views show the patient's right on the image left.
        pneumothorax: One ``bool`` mask per pneumothorax (one per affected
            side), each of the image's shape. Empty without a pneumothorax.
    """

    image: np.ndarray
    pneumothorax: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class BrainPhantom:
    """A multi-sequence brain MRI phantom with its tumour segmentation.

    Attributes:
        volumes: ``int16`` arrays keyed by ``MRI_SEQUENCES``, all of one shape
            (i, j, k) with i toward the patient's left, j toward posterior and
            k toward superior, which matches an LPS affine ``diag(-1, -1, 1)``.
            Voxels outside the head are exactly 0.
        segmentation: ``uint8`` array of the same shape with the BraTS labels
            0, 1 (necrotic or non-enhancing core), 2 (oedema) and 4 (enhancing
            tumour). Low-grade tumours have no label 4.
        tumour_side: ``"left"`` or ``"right"``, the patient side of the tumour.
    """

    volumes: dict[str, np.ndarray]
    segmentation: np.ndarray
    tumour_side: str


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], correlation: float) -> np.ndarray:
    """Draw white Gaussian noise, low-pass filter it and scale it to zero mean and unit variance.

    The filter is a Gaussian applied in the Fourier domain, so the field wraps
    around at the borders.

    Args:
        rng: The random generator.
        shape: The output shape, with any number of dimensions.
        correlation: Standard deviation of the Gaussian kernel, in pixels.
            Larger values give larger blobs.

    Returns:
        A ``float64`` array of ``shape``.
    """
    spectrum = np.fft.rfftn(rng.standard_normal(shape))
    axes = [np.fft.fftfreq(size) for size in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
    frequencies = np.meshgrid(*axes, indexing="ij", sparse=True)
    squared = sum(frequency**2 for frequency in frequencies)

    # The Fourier transform of a Gaussian kernel with standard deviation s is exp(-2 pi^2 s^2 f^2).
    spectrum *= np.exp(-2.0 * np.pi**2 * correlation**2 * squared)
    field = np.fft.irfftn(spectrum, s=shape, axes=range(len(shape)))

    field -= field.mean()
    deviation = field.std()
    return field / deviation if deviation > 0 else field


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return normalized (y, x) coordinates in [0, 1], y down and x right, as broadcastable arrays."""
    rows, columns = shape
    y = (np.arange(rows, dtype=np.float64)[:, None] + 0.5) / rows
    x = (np.arange(columns, dtype=np.float64)[None, :] + 0.5) / columns
    return y, x


def _soft_blob(y: np.ndarray, x: np.ndarray, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    """Return a Gaussian bump with peak 1 at ``centre`` (y, x) and standard deviations ``radii``."""
    distance = ((y - centre[0]) / radii[0]) ** 2 + ((x - centre[1]) / radii[1]) ** 2
    return np.exp(-0.5 * distance)


@dataclass(frozen=True)
class _Lung:
    """One lung of the frontal phantom in normalized image coordinates.

    ``sign`` is -1 for the lung on the image left (the patient's right) and +1
    for the other. The lung spans from ``medial`` outward by up to ``width``.
    """

    sign: int
    top: float
    base: float
    medial: float
    width: float

    def coordinates(self, y: np.ndarray, x: np.ndarray, shrink: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Return (u, t): u from 0 (medial) to 1 (lateral), t from 0 (apex) to 1 (base).

        ``shrink`` collapses the lung toward its medial base by that fraction,
        which is how a pneumothorax pushes the lung edge away from the chest wall.
        """
        top = self.top + shrink * 0.35 * (self.base - self.top)
        t = (y - top) / (self.base - top)
        half_width = self.width * (1.0 - shrink) * np.sqrt(np.clip(t, 0.0, 1.0)) * (1.0 - 0.15 * t)
        u = self.sign * (x - self.medial) / np.maximum(half_width, 1e-6)
        return u, t

    def mask(self, y: np.ndarray, x: np.ndarray, shrink: float = 0.0) -> np.ndarray:
        """Return the lung field as a ``bool`` array whose base is a diaphragm dome."""
        u, t = self.coordinates(y, x, shrink)
        dome = 0.07 * np.sin(np.pi * np.clip(u, 0.0, 1.0)) / (self.base - self.top)
        return (u >= 0.0) & (u <= 1.0) & (t >= 0.0) & (t <= 1.0 - dome)

    def point(self, u: float, t: float) -> tuple[float, float]:
        """Return the (y, x) position at lateral fraction u and height fraction t."""
        half_width = self.width * np.sqrt(t) * (1.0 - 0.15 * t)
        return self.top + t * (self.base - self.top), self.medial + self.sign * u * half_width


def _frontal_lungs(rng: np.random.Generator) -> tuple[_Lung, _Lung]:
    """Draw the geometry of both lungs, the patient's right lung (image left) wider and shorter."""
    top = rng.uniform(0.1, 0.14)
    right = _Lung(sign=-1, top=top, base=rng.uniform(0.7, 0.74), medial=0.45, width=rng.uniform(0.31, 0.35))
    left = _Lung(sign=1, top=top + 0.01, base=rng.uniform(0.73, 0.77), medial=0.56, width=rng.uniform(0.29, 0.33))
    return right, left


@dataclass(frozen=True, eq=False)
class _Frontal:
    """The pixel grid of one frontal image and its two lungs, with each lung field computed once."""

    y: np.ndarray
    x: np.ndarray
    lungs: tuple[_Lung, _Lung]
    fields: tuple[np.ndarray, np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the image."""
        return (self.y.shape[0], self.x.shape[1])

    def side(self, rng: np.random.Generator) -> int:
        """Return a random lung index, 0 (patient right) or 1 (patient left)."""
        return int(rng.integers(0, 2))


def _ribs(chest: _Frontal, thorax: np.ndarray, fracture: float, rng: np.random.Generator) -> np.ndarray:
    """Return the brightness added by nine posterior ribs, with a gap in one rib when ``fracture`` > 0.

    Rib k follows y = 0.13 + 0.065 k + 0.3 (x - 0.5)^2, so the distance to the
    nearest rib comes from one rounding instead of a pass per rib.
    """
    broken = int(rng.integers(2, 7))
    break_x = rng.choice([rng.uniform(0.12, 0.22), rng.uniform(0.78, 0.88)])
    phase = (chest.y - 0.13 - 0.3 * (chest.x - 0.5) ** 2) / 0.065
    nearest = np.rint(phase)
    band = np.clip(1.0 - np.abs(phase - nearest) * 0.065 / 0.012, 0.0, 1.0) * ((nearest >= 0) & (nearest <= 8))

    if fracture > 0:
        # A fracture is a lucent gap across the rib cortex.
        band *= 1.0 - fracture * ((nearest == broken) & (np.abs(chest.x - break_x) < 0.006))
    return 0.07 * band * thorax


def _mediastinum(chest: _Frontal, findings: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    """Return the density of the mediastinum and heart, and 0 elsewhere."""
    y, x = chest.y, chest.x
    widening = findings.get("Enlarged Cardiomediastinum", 0.0)
    half_width = 0.06 + 0.035 * widening
    upper = (np.abs(x - 0.505) < half_width) & (y > 0.06) & (y < 0.62)

    cardiomegaly = findings.get("Cardiomegaly", 0.0)
    heart_radius_x = rng.uniform(0.14, 0.17) + 0.09 * cardiomegaly
    heart_centre = (rng.uniform(0.6, 0.64), 0.53 + 0.4 * (heart_radius_x - 0.15))
    heart = ((y - heart_centre[0]) / 0.12) ** 2 + ((x - heart_centre[1]) / heart_radius_x) ** 2 <= 1.0

    density = np.zeros(chest.shape)
    density[upper] = 0.55
    density[heart] = 0.62
    return density


def _pneumothorax(chest: _Frontal, side: int, density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Collapse one lung away from the chest wall, darken the air space and return its ``bool`` mask.

    The air space is lateral and apical, has no lung markings and is bounded by
    a thin bright visceral pleural line.
    """
    lung, full = chest.lungs[side], chest.fields[side]
    shrink = rng.uniform(0.15, 0.4)
    collapsed = lung.mask(chest.y, chest.x, shrink=shrink)
    space = full & ~collapsed

    pleural_line = lung.mask(chest.y, chest.x, shrink=max(shrink - 0.02, 0.0)) & space
    density[space] = 0.06
    density[pleural_line] = 0.3
    return space & ~pleural_line


def _pleural_effusion(chest: _Frontal, side: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Return the added density of fluid filling a lung base up to a meniscus that rises laterally.

    The fluid raises the lung density (about 0.2) to that of soft tissue (about 0.45).
    """
    u, t = chest.lungs[side].coordinates(chest.y, chest.x)
    level = rng.uniform(0.6, 0.72)
    fluid = chest.fields[side] & (t > level - 0.2 * np.clip(u, 0.0, 1.0) ** 2)
    return 0.25 * strength * fluid


def _parenchymal_finding(name: str, chest: _Frontal, rng: np.random.Generator) -> np.ndarray:
    """Return the added density (before scaling by strength) of one lung-parenchyma finding."""
    y, x = chest.y, chest.x
    lung = chest.lungs[chest.side(rng)]
    centre = lung.point(rng.uniform(0.35, 0.7), rng.uniform(0.35, 0.8))

    if name == "Lung Opacity":
        return 0.18 * _soft_blob(y, x, centre, (0.08, 0.07))
    if name == "Lung Lesion":
        return 0.35 * _soft_blob(y, x, centre, (0.018, 0.018))
    if name == "Edema":
        right_hilum, left_hilum = (side.point(0.25, 0.5) for side in chest.lungs)
        return 0.25 * (_soft_blob(y, x, right_hilum, (0.12, 0.09)) + _soft_blob(y, x, left_hilum, (0.12, 0.09)))
    if name == "Consolidation":
        return 0.4 * (_soft_blob(y, x, centre, (0.09, 0.08)) > 0.45)
    if name == "Pneumonia":
        patches = smooth_noise(rng, chest.shape, correlation=4.0) > 0.6
        return 0.3 * patches * (_soft_blob(y, x, centre, (0.1, 0.09)) > 0.3)

    # Atelectasis: a thin plate-like band near the lung base.
    base_y, base_x = lung.point(0.5, 0.82)
    tilt = rng.uniform(-0.15, 0.15)
    band = np.abs((y - base_y) - tilt * (x - base_x)) < 0.009
    return 0.35 * (band & (np.abs(x - base_x) < 0.09))


def _support_device(y: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a thin bright line (a central venous catheter) ending in the right atrium, and an ECG lead."""
    tip = rng.uniform(0.5, 0.6)
    course = 0.35 + 0.12 * np.sin(np.pi * np.clip(y / tip, 0.0, 1.0)) + rng.uniform(-0.02, 0.02)
    line = (np.abs(x - course) < 0.0035) & (y < tip)

    lead_centre = (rng.uniform(0.2, 0.4), rng.uniform(0.7, 0.85))
    radius = np.sqrt((y - lead_centre[0]) ** 2 + (x - lead_centre[1]) ** 2)
    lead = np.abs(radius - 0.015) < 0.004
    return 0.5 * (line | lead)


def _check_findings(findings: Mapping[str, float]) -> None:
    """Raise ValueError for an unknown finding name or a strength outside (0, 1]."""
    for name, strength in findings.items():
        if name not in CHEST_FINDINGS:
            raise ValueError(f"Unknown chest finding {name!r}: expected one of {list(CHEST_FINDINGS)}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"Strength of {name!r} is {strength}: expected a number in (0, 1]")


def _to_uint8(density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add quantum noise, then map density 0-1 linearly to 0-255."""
    grain = 0.015 * rng.standard_normal(density.shape)
    return np.clip(np.rint((density + grain) * 255.0), 0, 255).astype(np.uint8)


def chest_radiograph(
    rng: np.random.Generator,
    shape: tuple[int, int],
    findings: Mapping[str, float],
    pneumothorax_sides: int = 1,
) -> Radiograph:
    """Draw a frontal (PA or AP) chest radiograph with the given findings.

    Anatomy: body, two lungs with vascular markings, mediastinum, heart on the
    patient's left (image right), spine and nine rib shadows.

    Findings: Enlarged Cardiomediastinum widens the mediastinum and
    Cardiomegaly the heart. Pleural Effusion fills a costophrenic base, and
    Pneumothorax leaves a dark rim without markings. Support Devices adds a
    catheter line and an ECG lead, Fracture breaks a rib, and Pleural Other
    thickens the lateral pleura. The parenchymal findings add bright patches,
    a nodule, perihilar haze or a band.

    Args:
        rng: The random generator; it sets geometry, placement and noise.
        shape: (rows, columns) of the image in pixels.
        findings: Finding name (one of ``CHEST_FINDINGS``) to strength in
            (0, 1]: 1 draws it fully, 0.5 faintly (for uncertain labels).
            ``"No Finding"`` draws nothing.
        pneumothorax_sides: 1 or 2, the number of lungs with a pneumothorax
            when ``findings`` contains ``"Pneumothorax"``.

    Returns:
        The image and one pneumothorax mask per affected side.

    Raises:
        ValueError: for an unknown finding, a strength outside (0, 1] or a
            ``pneumothorax_sides`` other than 1 or 2.
    """
    _check_findings(findings)
    if pneumothorax_sides not in (1, 2):
        raise ValueError(f"pneumothorax_sides is {pneumothorax_sides}: expected 1 or 2")

    y, x = _grid(shape)
    lungs = _frontal_lungs(rng)
    chest = _Frontal(y=y, x=x, lungs=lungs, fields=(lungs[0].mask(y, x), lungs[1].mask(y, x)))
    thorax = (((y - 0.5) / 0.5) ** 2 + ((x - 0.5) / 0.47) ** 2 <= 1.0).astype(np.float64)
    density = 0.05 + 0.38 * thorax

    markings = (
        0.2 + 0.035 * smooth_noise(rng, shape, correlation=2.0) + 0.03 * _soft_blob(y, x, (0.45, 0.5), (0.15, 0.2))
    )
    for field in chest.fields:
        density[field] = markings[field]

    masks = _draw_pneumothorax(chest, density, findings, pneumothorax_sides, rng)
    density += _ribs(chest, thorax, findings.get("Fracture", 0.0), rng)
    density += 0.1 * ((np.abs(x - 0.5) < 0.03) & (thorax > 0))
    mediastinum = _mediastinum(chest, findings, rng)
    density = np.maximum(density, mediastinum)
    # The mediastinum hides the few air pixels it overlaps, so they leave the mask.
    masks = tuple(mask & (mediastinum == 0) for mask in masks)

    density += _frontal_overlays(chest, mediastinum == 0, findings, rng)
    return Radiograph(image=_to_uint8(density, rng), pneumothorax=masks)


def _draw_pneumothorax(
    chest: _Frontal, density: np.ndarray, findings: Mapping[str, float], sides: int, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """Draw the pneumothorax into ``density`` on one random side or both and return its masks."""
    if "Pneumothorax" not in findings:
        return ()

    chosen = (0, 1) if sides == 2 else (chest.side(rng),)
    return tuple(_pneumothorax(chest, side, density, rng) for side in chosen)


def _frontal_overlays(
    chest: _Frontal, outside_mediastinum: np.ndarray, findings: Mapping[str, float], rng: np.random.Generator
) -> np.ndarray:
    """Return the density added by effusion, pleural thickening, parenchymal findings and devices.

    Lung findings stay in the lung fields outside the mediastinum and heart,
    which hide the lung behind them.
    """
    added = np.zeros(chest.shape)
    visible_lungs = (chest.fields[0] | chest.fields[1]) & outside_mediastinum
    for name in _PARENCHYMAL:
        if name in findings:
            added += findings[name] * _parenchymal_finding(name, chest, rng) * visible_lungs

    if "Pleural Effusion" in findings:
        bilateral = rng.random() < 0.3
        for side in (0, 1) if bilateral else (chest.side(rng),):
            added += _pleural_effusion(chest, side, findings["Pleural Effusion"], rng) * visible_lungs

    if "Pleural Other" in findings:
        u, t = chest.lungs[chest.side(rng)].coordinates(chest.y, chest.x)
        thickening = (u > 0.9) & (u <= 1.02) & (t > 0.1) & (t < 0.6)
        added += 0.3 * findings["Pleural Other"] * thickening

    if "Support Devices" in findings:
        added += findings["Support Devices"] * _support_device(chest.y, chest.x, rng)
    return added


def chest_radiograph_lateral(
    rng: np.random.Generator, shape: tuple[int, int], findings: Mapping[str, float]
) -> np.ndarray:
    """Draw a lateral chest radiograph: anterior on the image left, spine on the right.

    Only findings visible on a lateral film in this cartoon are drawn:
    Cardiomegaly, Pleural Effusion (posterior costophrenic base), Support
    Devices and the parenchymal findings (one bright patch). The others are
    accepted and not drawn.

    Args:
        rng: The random generator.
        shape: (rows, columns) of the image in pixels.
        findings: As for :func:`chest_radiograph`.

    Returns:
        A ``uint8`` array of ``shape``; bright is dense.

    Raises:
        ValueError: for an unknown finding or a strength outside (0, 1].
    """
    _check_findings(findings)
    y, x = _grid(shape)
    body = ((y - 0.52) / 0.5) ** 2 + ((x - 0.5) / 0.44) ** 2 <= 1.0
    lung = ((y - 0.45) / 0.3) ** 2 + ((x - 0.52) / 0.3) ** 2 <= 1.0
    density = 0.05 + 0.4 * body
    density[lung] = 0.22 + 0.03 * smooth_noise(rng, shape, correlation=2.0)[lung]

    heart_radius = 0.13 + 0.06 * findings.get("Cardiomegaly", 0.0)
    heart = ((y - 0.6) / 0.14) ** 2 + ((x - 0.36) / heart_radius) ** 2 <= 1.0
    density[heart] = 0.55
    density += 0.25 * ((np.abs(x - 0.8) < 0.05) & body)

    if "Pleural Effusion" in findings:
        density += 0.35 * findings["Pleural Effusion"] * (lung & (y > 0.62 - 0.2 * (x - 0.5)) & (x > 0.55))
    if "Support Devices" in findings:
        density += findings["Support Devices"] * _support_device(y, x, rng)
    parenchymal = [findings[name] for name in _PARENCHYMAL if name in findings]
    if parenchymal:
        centre = (rng.uniform(0.35, 0.55), rng.uniform(0.45, 0.65))
        density += 0.25 * max(parenchymal) * _soft_blob(y, x, centre, (0.07, 0.07)) * lung
    return _to_uint8(density, rng)


def _ellipsoid_radius(shape: tuple[int, int, int], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    """Return the normalized ellipsoid radius per voxel: 1 on the surface, below 1 inside."""
    axes = np.meshgrid(*[np.arange(size, dtype=np.float64) for size in shape], indexing="ij", sparse=True)
    squared = sum(((axis - c) / r) ** 2 for axis, c, r in zip(axes, centre, radii, strict=True))
    return np.sqrt(squared)


def _brain_tissues(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Return the tissue codes of a head without tumour: skull ring, CSF, grey and white matter, ventricles."""
    centre = tuple((size - 1) / 2.0 for size in shape)
    radii = (0.36 * shape[0], 0.42 * shape[1], 0.42 * shape[2])
    radius = _ellipsoid_radius(shape, centre, radii)
    folded = radius + 0.03 * smooth_noise(rng, shape, correlation=1.5)

    tissues = np.full(shape, _BACKGROUND, dtype=np.uint8)
    tissues[(radius > 1.06) & (radius <= 1.16)] = _SKULL
    tissues[radius <= 1.0] = _CSF
    tissues[folded <= 0.93] = _GREY
    tissues[folded <= 0.78] = _WHITE

    for side in (-1.0, 1.0):
        ventricle_centre = (
            centre[0] + side * 0.07 * shape[0],
            centre[1] - 0.02 * shape[1],
            centre[2] + 0.06 * shape[2],
        )
        ventricle_radii = (0.045 * shape[0], 0.16 * shape[1], 0.1 * shape[2])
        tissues[_ellipsoid_radius(shape, ventricle_centre, ventricle_radii) <= 1.0] = _CSF
    return tissues


def _place_tumour(rng: np.random.Generator, tissues: np.ndarray, grade: str) -> tuple[np.ndarray, str]:
    """Add an off-centre tumour to ``tissues`` in place and return its BraTS label map and patient side.

    High-grade tumours have a necrotic core, an enhancing rim and oedema.
    Low-grade ones have a non-enhancing core and oedema.
    """
    shape = tissues.shape
    side = "left" if rng.random() < 0.5 else "right"
    # i increases toward the patient's left.
    offset = rng.uniform(0.13, 0.18) * shape[0] * (1.0 if side == "left" else -1.0)
    centre = (
        (shape[0] - 1) / 2.0 + offset,
        (shape[1] - 1) / 2.0 + rng.uniform(-0.1, 0.1) * shape[1],
        (shape[2] - 1) / 2.0 + rng.uniform(-0.08, 0.08) * shape[2],
    )
    size = rng.uniform(0.1, 0.14) * shape[0]
    # A multiplicative perturbation keeps the tumour centre (radius 0) inside the core.
    radius = _ellipsoid_radius(shape, centre, (size, size * 1.15, size)) * (1.0 + 0.15 * smooth_noise(rng, shape, 2.0))
    inside = (tissues == _GREY) | (tissues == _WHITE) | (tissues == _CSF)

    labels = np.zeros(shape, dtype=np.uint8)
    layers = [(1.0, _OEDEMA, OEDEMA)]
    if grade == "HGG":
        layers += [(0.55, _ENHANCING, ENHANCING_TUMOUR), (0.35, _CORE, NECROTIC_CORE)]
    else:
        layers += [(0.45, _CORE, NECROTIC_CORE)]
    for limit, tissue, label in layers:
        region = inside & (radius <= limit)
        tissues[region] = tissue
        labels[region] = label
    return labels, side


def brain_mri(rng: np.random.Generator, shape: tuple[int, int, int], grade: str) -> BrainPhantom:
    """Draw a four-sequence brain MRI (FLAIR, T1, T1ce, T2) with a glioma and its segmentation.

    The head is an ellipsoid with a skull ring, CSF, folded grey matter over
    white matter and two ventricles. The sequences differ as on real scans.
    CSF is bright on T2 and dark on FLAIR and T1, and white matter is brighter
    than grey on T1. Oedema is bright on FLAIR and T2, and the enhancing rim is
    bright on T1ce only. All sequences share one smooth bias field, and each
    gets its own noise.

    NOTE: real BraTS volumes are skull-stripped. The phantom keeps a skull
    ring, so intensity statistics over all nonzero voxels include it.

    Args:
        rng: The random generator.
        shape: (i, j, k) voxel counts; i runs toward the patient's left, j
            toward posterior, k toward superior (1 mm voxels in the writer).
        grade: ``"HGG"`` or ``"LGG"``.

    Returns:
        The volumes, the segmentation and the tumour side.

    Raises:
        ValueError: when ``grade`` is not one of ``TUMOUR_GRADES``.
    """
    if grade not in TUMOUR_GRADES:
        raise ValueError(f"Unknown tumour grade {grade!r}: expected one of {list(TUMOUR_GRADES)}")

    tissues = _brain_tissues(rng, shape)
    labels, side = _place_tumour(rng, tissues, grade)
    head = tissues != _BACKGROUND

    # One coil bias field for all sequences keeps the cost at one FFT per case.
    bias = np.exp(0.08 * smooth_noise(rng, shape, correlation=8.0))
    volumes: dict[str, np.ndarray] = {}
    for sequence in MRI_SEQUENCES:
        means = np.asarray(_MRI_INTENSITY[sequence])[tissues]
        noisy = means * bias + 12.0 * rng.standard_normal(shape)
        volumes[sequence] = np.where(head, np.clip(np.rint(noisy), 1, 32767), 0).astype(np.int16)
    return BrainPhantom(volumes=volumes, segmentation=labels, tumour_side=side)


def chest_ct(
    rng: np.random.Generator, shape: tuple[int, int, int], involvement: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a chest CT in Hounsfield units with ground-glass lesions covering a fraction of the lungs.

    The body is an ellipse of soft tissue with a fat ring, a spine behind and
    a heart in front on the patient's left. The lungs are two ellipsoids of
    about -850 HU with vessels that span the middle 80 % of the slices, so the
    first and last slices have no lung. The lesions are blobs of about -500 HU,
    and above half involvement their densest parts consolidate to about -150 HU.

    Args:
        rng: The random generator.
        shape: (i, j, k) voxel counts; i runs toward the patient's left, j
            toward anterior, k toward superior.
        involvement: Fraction of lung voxels inside a lesion, in [0, 1).

    Returns:
        The ``int16`` HU volume (air is -1000) and the ``bool`` lesion mask,
        both of ``shape``. The mask is empty when ``involvement`` is 0.

    Raises:
        ValueError: when ``involvement`` is outside [0, 1).
    """
    if not 0.0 <= involvement < 1.0:
        raise ValueError(f"involvement is {involvement}: expected a fraction in [0, 1)")

    hu, lungs = _chest_ct_anatomy(rng, shape)
    lesion = np.zeros(shape, dtype=bool)
    if involvement > 0 and lungs.any():
        field = smooth_noise(rng, shape, correlation=3.0)
        threshold = np.quantile(field[lungs], 1.0 - involvement)
        lesion = lungs & (field > threshold)
        hu[lesion] = GROUND_GLASS_HU + 40.0 * rng.standard_normal(int(lesion.sum()))
        if involvement > 0.5:
            dense = lesion & (field > np.quantile(field[lungs], 1.0 - 0.3 * involvement))
            hu[dense] = CONSOLIDATION_HU + 40.0 * rng.standard_normal(int(dense.sum()))

    volume = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return volume, lesion


def _chest_ct_anatomy(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return the HU volume of a chest without lesions (float64) and its ``bool`` lung mask."""
    ni, nj, nk = shape
    ci, cj, ck = ((size - 1) / 2.0 for size in shape)
    body = _ellipsoid_radius(shape, (ci, cj, ck), (0.44 * ni, 0.33 * nj, 1e6))
    hu = np.full(shape, AIR_HU) + 10.0 * rng.standard_normal(shape)
    hu[body <= 1.0] = SOFT_TISSUE_HU + 15.0 * rng.standard_normal(int((body <= 1.0).sum()))
    hu[(body > 0.88) & (body <= 1.0)] = FAT_HU

    lungs = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):
        centre = (ci + side * 0.2 * ni, cj - 0.02 * nj, ck)
        radii = (rng.uniform(0.14, 0.16) * ni, rng.uniform(0.22, 0.25) * nj, 0.4 * nk)
        lungs |= _ellipsoid_radius(shape, centre, radii) <= 1.0

    # j increases toward anterior, so the spine sits at low j and the heart at high j.
    heart = _ellipsoid_radius(shape, (ci + 0.08 * ni, cj + 0.12 * nj, ck - 0.1 * nk), (0.15 * ni, 0.13 * nj, 0.22 * nk))
    lungs &= heart > 1.0
    vessels = smooth_noise(rng, shape, correlation=0.8) > 2.0
    hu[lungs] = LUNG_HU + 25.0 * rng.standard_normal(int(lungs.sum()))
    hu[lungs & vessels] = -100.0

    spine = _ellipsoid_radius(shape, (ci, cj - 0.24 * nj, ck), (0.07 * ni, 0.07 * nj, 1e6)) <= 1.0
    hu[spine] = BONE_HU
    return hu, lungs
