"""Segmentation data: scans turned into training items, patient splits, and MONAI patch transforms.

Training and inference share ``prepare_image`` (canonical LPS, target spacing, robust normalisation),
so a network never sees a scan prepared differently from the ones it learned on. No Ray and no paths
here: callers read the files and decide where the work runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import GridConfig, SegConfig
from ..preprocess import normalise_intensity, to_canonical, to_scan_grid
from ..schema import is_disc_label
from ..volume import Volume


def disc_foreground(labels: np.ndarray) -> np.ndarray:
    """0/1 uint8: the voxels carrying any disc label (SPIDER 201..225)."""
    return is_disc_label(labels).astype(np.uint8)


def prepare_image(volume: Volume, spacing_mm, clip_percentiles, orientation: str = "LPS") -> Volume:
    """The network's input grid: canonical orientation, target spacing (linear), normalised float32."""
    canonical = to_canonical(volume, spacing_mm, "linear", orientation)
    return canonical.with_voxels(normalise_intensity(canonical.voxels, clip_percentiles))


def prepare_pair(image: Volume, mask: Volume, grid: GridConfig, seg: SegConfig) -> dict[str, np.ndarray]:
    """One training item: ``{"image": (1, X, Y, Z) float32, "label": (1, X, Y, Z)}``.

    The disc foreground is resampled onto the prepared image's own grid, so image and label are
    voxel-aligned whatever the scan's orientation: with ``seg.soft_labels`` linearly, as the float32
    share of each voxel that is disc (0..1), else nearest, as uint8 0/1.
    """
    if not image.same_grid(mask):
        raise ValueError("image and mask grids disagree")
    prepared = prepare_image(image, grid.spacing_mm, seg.clip_percentiles, grid.orientation)
    foreground = disc_foreground(mask.voxels)
    if seg.soft_labels:
        share = to_scan_grid(mask.with_voxels(foreground.astype(np.float32)), prepared, interpolation="linear").voxels
        label = np.clip(share, 0.0, 1.0).astype(np.float32)
    else:
        label = to_scan_grid(mask.with_voxels(foreground), prepared).voxels.astype(np.uint8)
    return {"image": prepared.voxels[None].astype(np.float32), "label": label[None]}


def split_patients(
    index: pd.DataFrame,
    test_fraction: float,
    val_fraction: float,
    test_site: str | None = None,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Scan ids for ``train`` / ``val`` / ``test``, never splitting one patient's scans.

    With ``test_site`` every patient scanned there is the test set (as the paper held one institution
    out); otherwise ``test_fraction`` of the patients, drawn with ``seed``. ``val_fraction`` of the
    remaining patients (at least one, when there are two or more) is kept for early stopping.
    """
    rng = np.random.default_rng(seed)
    patients = np.array(sorted(index["patient_id"].astype(str).unique()))
    if test_site is not None:
        sites = set(index["site"].astype(str))
        if str(test_site) not in sites:
            raise ValueError(f"test site {test_site!r} not in the archive (sites: {sorted(sites)})")
        test = set(index.loc[index["site"].astype(str) == str(test_site), "patient_id"].astype(str))
    else:
        n_test = int(round(test_fraction * len(patients))) if len(patients) > 2 else 0
        test = set(rng.permutation(patients)[:n_test])
    rest = np.array([p for p in patients if p not in test])
    if len(rest) == 0:
        raise ValueError("no patients left for training after the test split")
    n_val = max(1, int(round(val_fraction * len(rest)))) if len(rest) >= 2 else 0
    val = set(rng.permutation(rest)[:n_val])
    part = {p: "test" if p in test else "val" if p in val else "train" for p in patients}
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for scan_id, patient in zip(index["scan_id"], index["patient_id"].astype(str)):
        out[part[patient]].append(str(scan_id))
    return out


def patient_folds(index: pd.DataFrame, folds: int, val_fraction: float, seed: int = 0, min_val_patients: int = 0) -> list[dict[str, list[str]]]:
    """``folds`` cross-validation splits by patient: each a ``train`` / ``val`` / ``test`` dict of scan ids.

    Every patient is tested in exactly one fold (folds differ in size by at most one patient), and
    within a fold ``val_fraction`` of the other patients (at least one) is kept for early stopping,
    as nnU-Net's 5-fold protocol does for small labelled sets, unless the fold has fewer than
    ``min_val_patients`` of them: then all train and ``val`` is empty. Needs three patients or more.
    """
    patients = np.array(sorted(index["patient_id"].astype(str).unique()))
    folds = min(int(folds), len(patients))
    if len(patients) < 3 or folds < 2:
        raise ValueError(f"cross-validation needs 3 patients or more and 2 folds or more ({len(patients)} patients, {folds} folds)")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(patients)
    out = []
    for fold in range(folds):
        test = set(shuffled[fold::folds])
        rest = np.array([p for p in shuffled if p not in test])
        n_val = max(1, int(round(val_fraction * len(rest)))) if len(rest) >= min_val_patients else 0
        val = set(rng.permutation(rest)[:n_val])
        part = {p: "test" if p in test else "val" if p in val else "train" for p in patients}
        split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for scan_id, patient in zip(index["scan_id"], index["patient_id"].astype(str)):
            split[part[patient]].append(str(scan_id))
        out.append(split)
    return out


def affine_source_size(patch_size, scale: float, rotate_deg: float) -> tuple[int, ...]:
    """The crop that holds every voxel a zoom of up to ``1 + scale`` and a sagittal tilt of up to
    ``rotate_deg`` can reach when producing a ``patch_size`` patch from its centre.

    Cropping this first and letting the affine cut the patch out of it means augmented patches show
    real anatomy to their edges instead of padding (zooming out a patch already cut to size pulls
    padding in: reflected or smeared discs that the network then learns).
    """
    theta = np.deg2rad(rotate_deg)
    x, y, z = (float(p) for p in patch_size)
    # A tilt about the left-right axis (axis 0) widens the patch's extent in the other two.
    extent = (x, y * np.cos(theta) + z * np.sin(theta), z * np.cos(theta) + y * np.sin(theta))
    return tuple(int(np.ceil(e * (1.0 + scale))) for e in extent)


def train_transforms(patch_size, samples_per_scan: int, scale: float = 0.0, rotate_deg: float = 0.0, soft_labels: bool = False):
    """Patches around the discs (3 of 4 centred on disc voxels) with light augmentation.

    ``scale`` and ``rotate_deg`` add a random zoom (1 +- scale) and a tilt in the sagittal plane to
    half the patches: patients and fields of view differ in size, and lordosis tilts each disc. With
    them, a larger region is cropped (``affine_source_size``) and the affine cuts the patch from its
    centre (the identity for the other half). Soft (partial-volume) labels are zoomed and tilted
    linearly, like the image; 0/1 labels by nearest neighbour, so they stay 0/1.

    Deterministic steps come first so a ``CacheDataset`` keeps their output (padding and the
    foreground/background index lists) and only the random crop and augmentation run per epoch.
    """
    from monai.transforms import (
        BorderPadd,
        Compose,
        DeleteItemsd,
        FgBgToIndicesd,
        RandAffined,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    keys = ["image", "label"]
    patch_size = tuple(int(p) for p in patch_size)
    crop_size, margin, spatial = patch_size, [0, 0, 0], []
    if scale > 0 or rotate_deg > 0:
        crop_size = affine_source_size(patch_size, scale, rotate_deg)
        # The margin lets the larger crop centre wherever the patch could (at the first and last
        # disc too) instead of being held away from the scan's ends.
        margin = [-(-(c - p) // 2) for c, p in zip(crop_size, patch_size)]
        spatial = [
            RandAffined(
                keys,
                prob=0.5,
                spatial_size=patch_size,
                rotate_range=(np.deg2rad(rotate_deg), 0.0, 0.0),  # about the left-right axis: sagittal tilt
                scale_range=(scale, scale, scale),
                mode=("bilinear", "bilinear" if soft_labels else "nearest"),
                # Zeros only where the crop itself ran past the scan: the value SpatialPadd and the
                # sliding window pad with (the normalised image's mean), for image and label alike.
                padding_mode="zeros",
            )
        ]
    return Compose(
        [
            BorderPadd(keys, spatial_border=margin),
            SpatialPadd(keys, spatial_size=crop_size),
            FgBgToIndicesd("label", fg_postfix="_fg", bg_postfix="_bg"),
            RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=crop_size,
                pos=3,
                neg=1,
                num_samples=samples_per_scan,
                fg_indices_key="label_fg",
                bg_indices_key="label_bg",
            ),
            DeleteItemsd(["label_fg", "label_bg"]),  # ragged index lists would not batch
            # Left-right mirror images are plausible spines; intensity jitter mimics other scanners.
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            *spatial,
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            RandGaussianNoised("image", prob=0.2, std=0.05),
        ]
    )
