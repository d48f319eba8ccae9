"""Sites and image formation: per-institution acquisition, stored orientation, contrast, noise, bias.

Each site borrows one real SPIDER T1 acquisition (scanner, field strength, pixel spacing, slice thickness).
Slices are sagittal, so the thick axis is left-right. Pure numpy/scipy; no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from .anatomy import BACKGROUND, BONE_MARROW, CSF, DISC, POSTERIOR_BONE
from .spider_stats import t1_acquisitions

# Stored axis orders (SimpleITK DICOMOrient codes: the direction each array axis increases towards).
# LPS is the canonical grid; PIR is how a DICOM sagittal series (rows anterior->posterior, columns
# superior->inferior, slices left->right) lands in an .mha; RAS is a NIfTI converter's habit.
ORIENTATIONS = ("LPS", "PIR", "RAS")


@dataclass(frozen=True)
class SizePreset:
    fov_mm: tuple[float, float, float]  # nominal field of view LR, AP, SI (grown per patient to hold the discs)
    below_sacrum_mm: float  # field of view below the sacral endplate
    n_discs: int
    max_voxels: int  # in-plane pixels are binned (x2, x3 ...) until a scan fits


SIZES = {
    "full": SizePreset((76.0, 140.0, 240.0), 40.0, 6, 4_000_000),
    "small": SizePreset((60.0, 100.0, 150.0), 15.0, 4, 150_000),
    # The scale benchmark's (bench/bench_scale.py): the pipeline's fixed costs per scan, not its science.
    "tiny": SizePreset((50.0, 90.0, 90.0), 10.0, 2, 40_000),
}

# T1-weighted relative intensities per tissue class: marrow fat bright, disc and muscle intermediate,
# CSF dark, posterior elements a little darker than the bodies (more cortical bone).
T1_INTENSITY = {BACKGROUND: 0.42, BONE_MARROW: 0.78, DISC: 0.36, CSF: 0.14, POSTERIOR_BONE: 0.62}


@dataclass(frozen=True)
class Site:
    name: str
    acquisition: dict  # SPIDER's overview columns, as strings (PixelSpacing rewritten to the stored value)
    pixel_mm: float  # in-plane spacing as stored
    slice_mm: float  # slice thickness = spacing along left-right
    orientation: str
    scale: float  # stored intensity of relative intensity 1.0
    tissue_gain: tuple[float, ...]  # per tissue class, multiplies T1_INTENSITY
    gamma: float  # contrast curve
    noise: float  # Rician sigma, relative to scale
    bias: float  # strength of the smooth multiplicative bias field (log amplitude)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Spacing on the canonical LPS axes (x: left-right = slices)."""
        return (self.slice_mm, self.pixel_mm, self.pixel_mm)


def draw_sites(seed: int, n_sites: int, size: str) -> list[Site]:
    """``n_sites`` institutions with distinct real acquisitions and distinct stored voxel spacings."""
    preset = SIZES[size]
    table = t1_acquisitions()
    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(table))
    sites: list[Site] = []
    seen: set[tuple[float, float]] = set()
    for pass_ in range(2):  # a second pass allows repeated spacings once the distinct ones run out
        for row in order:
            if len(sites) == n_sites:
                break
            acq = table.iloc[row]
            pixel = _binned_pixel(acq.pixel_mm, acq.slice_mm, preset)
            key = (round(pixel, 6), acq.slice_mm)
            if pass_ == 0 and key in seen:
                continue
            seen.add(key)
            sites.append(_site(len(sites), acq, pixel, rng))
    return sites


def _binned_pixel(pixel_mm: float, slice_mm: float, preset: SizePreset) -> float:
    lr, ap, si = preset.fov_mm
    factor = 1
    while (lr / slice_mm) * (ap / (pixel_mm * factor)) * (si / (pixel_mm * factor)) > preset.max_voxels:
        factor += 1
    return pixel_mm * factor


def _site(index: int, acq, pixel: float, rng: np.random.Generator) -> Site:
    acquisition = {k: v for k, v in acq.items() if k not in ("source_series", "pixel_mm", "slice_mm")}
    if pixel != acq.pixel_mm:  # binned: say what is stored
        acquisition["PixelSpacing"] = f"[{float(pixel)!r}, {float(pixel)!r}]"
    acquisition["SpacingBetweenSlices"] = acquisition["SliceThickness"]  # synthetic slices are contiguous
    return Site(
        name=f"site{index + 1}",
        acquisition=acquisition,
        pixel_mm=float(pixel),
        slice_mm=float(acq.slice_mm),
        orientation=ORIENTATIONS[index % len(ORIENTATIONS)],
        scale=float(rng.uniform(400, 2000)),
        tissue_gain=tuple(float(g) for g in rng.uniform(0.85, 1.15, len(T1_INTENSITY))),
        gamma=float(rng.uniform(0.8, 1.25)),
        noise=float(rng.uniform(0.02, 0.06)),
        bias=float(rng.uniform(0.1, 0.35)),
    )


def render_image(rng: np.random.Generator, tissue: np.ndarray, site: Site) -> np.ndarray:
    """MR-like uint16 image of a tissue map on the canonical grid (spacing ``site.spacing``)."""
    lut = np.zeros(256, np.float32)
    patient_gain = rng.normal(1.0, 0.05, len(T1_INTENSITY))
    for cls, value in T1_INTENSITY.items():
        lut[cls] = value * site.tissue_gain[cls] * patient_gain[cls]
    image = lut[tissue]
    # Point-spread function: ~0.5 mm in-plane, a third of a slice across slices (partial volume).
    sigma = (0.35, 0.5 / site.pixel_mm, 0.5 / site.pixel_mm)
    image = gaussian_filter(image, sigma=sigma, mode="nearest", truncate=3.0)
    np.power(np.maximum(image, 0, out=image), site.gamma, out=image)
    image *= _bias_field(rng, tissue.shape, site.bias)
    noise = np.float32(site.noise)
    real = image + noise * rng.standard_normal(image.shape, dtype=np.float32)
    imag = noise * rng.standard_normal(image.shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imag * imag)  # Rician: magnitude of complex Gaussian noise
    return np.clip(np.rint(magnitude * np.float32(site.scale)), 0, 65535).astype(np.uint16)


def _bias_field(rng: np.random.Generator, shape, strength: float) -> np.ndarray:
    """Smooth multiplicative field, separable in x, y, z; brighter posteriorly (the spine coil)."""
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    fx = rng.uniform(-0.5, 0.5) * x**2
    fy = 0.8 * y + rng.uniform(-0.3, 0.3) * np.cos(np.pi * y + rng.uniform(0, np.pi))
    fz = rng.uniform(-0.6, 0.6) * np.cos(np.pi * z * rng.uniform(0.5, 1.0) + rng.uniform(0, np.pi))
    ex, ey, ez = (np.exp(np.float32(strength) * f).astype(np.float32) for f in (fx, fy, fz))
    return ex[:, None, None] * ey[None, :, None] * ez[None, None, :]
