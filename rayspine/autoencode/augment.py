"""Augmentation of binary disc crops for autoencoder training: numpy in, numpy out.

Left-right flips that keep the centre of mass, random turns and stretches about it (one turn limit, or
one per crop axis), and the turn limits that suit the frame the crops were made in.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Sequence

import numpy as np

from ..config import AEConfig

log = logging.getLogger(__name__)


def flip_left_right(crop: np.ndarray) -> np.ndarray:
    """Mirror a crop along axis 0 (right<->left), shifted back so its centre of mass stays where it was.

    A plain ``[::-1]`` moves the centre from voxel c to 63 - c (off by one for a crop centred at 32),
    and a one-voxel shift of a thin disc costs more IoU than most shape differences.
    """
    flipped = crop[::-1]
    profile = crop.reshape(crop.shape[0], -1).sum(axis=1).astype(float)
    if profile.sum() == 0:
        return np.ascontiguousarray(flipped)
    axis = np.arange(crop.shape[0])
    centre = (profile * axis).sum() / profile.sum()
    shift = int(round(centre - (crop.shape[0] - 1 - centre)))
    return np.ascontiguousarray(np.roll(flipped, shift, axis=0))


def random_affine(crop: np.ndarray, rng: np.random.Generator, rotate_deg: float | Sequence[float], scale: float) -> np.ndarray:
    """The crop turned by up to ``rotate_deg`` about each axis (one limit, or one per crop axis) and
    stretched by a factor of up to ``1 +- scale`` along each, about its centre of mass (trilinear, kept
    where >= 0.5).

    A disc of another person is, to first order, this one at another tilt and size. The defaults (10
    degrees, 10 %) are well inside how much real discs differ in both, and help on people the model never
    saw (``bench/ae_heldout.md``, session 12). Only the disc's box, widened by as far as the transform can move a
    voxel, is resampled: the rest of the crop stays background.
    """
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    voxels = np.argwhere(crop)
    if len(voxels) == 0:
        return crop
    limits = np.broadcast_to(np.asarray(rotate_deg, dtype=float), (3,))
    angles = rng.uniform(-limits, limits, 3)
    stretch = 1.0 + rng.uniform(-scale, scale, 3)
    # affine_transform maps each output index o to the input index M o + offset: M is the inverse map.
    matrix = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() / stretch[None, :]
    centre = voxels.mean(axis=0)
    reach = np.abs(voxels - centre).max() * (np.sin(np.radians(limits.max())) * np.sqrt(2) + scale / (1 - scale)) + 2
    low = np.maximum(voxels.min(axis=0) - int(np.ceil(reach)), 0)
    high = np.minimum(voxels.max(axis=0) + int(np.ceil(reach)) + 1, crop.shape)
    offset = centre - matrix @ centre + matrix @ low
    out = np.zeros_like(crop)
    moved = ndimage.affine_transform(crop.astype(np.float32), matrix, offset=offset, output_shape=tuple(high - low), order=1)
    out[tuple(slice(a, b) for a, b in zip(low, high))] = moved >= 0.5
    return out


def for_crop_frame(cfg: AEConfig, crop_frame: str) -> AEConfig:
    """The training settings for crops made in ``crop_frame`` (``DiscConfig.crop_frame``).

    Tilt-aligned crops ("disc_plane") hold every disc with its normal on axis 2, so one turn limit for
    every axis is kept for turns within the disc's plane (about axis 2): a turn about axis 0 or 1 would
    make a tilt no crop of that frame has, and the code would spend its numbers on it (bottleneck 4 on
    unseen people, aligned crops: 0.789 with such turns, 0.817 without; bench/ae_heldout.md, session 16).
    Three limits are used as given.
    """
    if crop_frame == "disc_plane" and np.ndim(cfg.augment_rotate_deg) == 0:
        log.info("crops tilt-aligned (disc_plane): training turns within the disc's plane only, up to %g degrees", cfg.augment_rotate_deg)
        return replace(cfg, augment_rotate_deg=(0.0, 0.0, float(cfg.augment_rotate_deg)))
    return cfg


def augment_batch(batch: np.ndarray, rng: np.random.Generator, flips: bool = True, shift: int = 0, rotate_deg: float | Sequence[float] = 0.0, scale: float = 0.0) -> np.ndarray:
    if flips:
        flip = rng.random(len(batch)) < 0.5
        batch = np.stack([flip_left_right(c) if f else c for c, f in zip(batch, flip)])
    if np.any(np.asarray(rotate_deg) > 0) or scale > 0:
        batch = np.stack([random_affine(c, rng, rotate_deg, scale) for c in batch])
    if shift > 0:  # crops are zero-padded around the disc, so a small roll moves the disc, cuts nothing
        moves = rng.integers(-shift, shift + 1, size=(len(batch), 3))
        batch = np.stack([np.roll(c, tuple(m), axis=(0, 1, 2)) for c, m in zip(batch, moves)])
    return batch
