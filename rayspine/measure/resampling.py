"""Resampling a binary mask onto another grid, nearest-neighbour or shape-aware (pure numpy/scipy).

A disc mask drawn on 4.4 mm sagittal slices and resampled by nearest neighbour onto a 1.4 mm grid is a
staircase: every fine voxel copies the slice it falls in, so the disc's outline jumps once per slice.
Shape-based interpolation instead interpolates a **signed distance map** of the mask (Raya & Udupa
1990; Herman et al. 1992) and thresholds it at 0, so an outline that shrinks from one slice to the
next shrinks smoothly in between.

Methods (``METHODS``):

* ``"nearest"``: order-0 sampling of the mask (the crops' method before ``"slices"``);
* ``"linear"``: trilinear interpolation of the 0/1 mask, kept where it is >= 0.5;
* ``"distance"``: trilinear interpolation of the signed Euclidean distance map in mm
  (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``), kept where it is < 0;
* ``"slices"``: shape-based interpolation between the slices of the coarsest axis: each slice's own
  2-D signed distance map, interpolated trilinearly and kept where it is < 0 (``slice_signed_distance``).
  Between two slices that hold disc the outline moves smoothly from one to the other, as with
  ``"distance"``; the outermost slice keeps its whole slab, as with ``"nearest"``.

Why ``"slices"`` and not ``"distance"`` for thick slices: a 3-D distance map across a 4.4 mm gap to the
first empty slice reaches 0 beyond the last disc slice only near the footprint's centre, so every disc
loses the outer half-slab of its rim (about 5 % of its volume, 1.5-2 mm of lateral width;
``bench/crop_resampling.md``). A slice-wise map knows nothing of the next slice's distances, so the
empty slice next to a disc slice is given that slice's mirror image, ``|phi|``: positive everywhere,
equal and opposite inside the footprint, so the surface lies exactly halfway, at the slab's face.

The signed distance is ``edt(outside) - edt(inside)``: minus the distance to the nearest background
voxel centre inside the mask, plus the distance to the nearest mask voxel centre outside. Between an
inside voxel and its outside neighbour it goes from ``-s`` to ``+s`` and crosses 0 at the voxel face,
so on the source grid itself the distance method reproduces the mask exactly, and a surface one voxel
away from any other keeps the extent nearest-neighbour gives it.

All samplers share one convention (``ndimage.affine_transform``'s): output index ``o`` samples input
index ``scale * o + offset`` (a diagonal map, axis by axis, unless ``scale`` is a matrix).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Spacing = tuple[float, float, float]
METHODS = ("nearest", "linear", "distance", "slices")
# Voxels of background added around the mask before sampling. One is enough for "nearest" (scipy's
# "constant" mode returns cval beyond the outermost voxel *centre*, which would shave half a voxel off
# each face); the interpolating methods need a second so that a sample just outside the mask's box
# interpolates between an outside value and an inside one, never reads the cval directly.
PAD = {"nearest": 1, "linear": 2, "distance": 2, "slices": 2}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown mask resampling method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def signed_distance(mask: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Signed Euclidean distance map (mm, float32) of a binary mask: negative inside, positive outside,
    crossing 0 at the faces between mask and background voxels. ``spacing`` is mm per array axis.

    An all-background or all-foreground array has no surface: it gives +inf (or -inf) everywhere.
    """
    mask = np.asarray(mask) != 0
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    if mask.all():
        return np.full(mask.shape, -np.inf, np.float32)
    sampling = np.asarray(spacing, dtype=float)
    outside = ndimage.distance_transform_edt(~mask, sampling=sampling)  # 0 inside
    inside = ndimage.distance_transform_edt(mask, sampling=sampling)  # 0 outside
    return (outside - inside).astype(np.float32)


def slice_signed_distance(mask: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Shape-based interpolation's map (Raya & Udupa 1990): the 2-D signed distance (mm) of each slice
    across the coarsest axis of ``spacing``, negative inside; float32, the shape of ``mask``.

    A slice without mask is far outside, except next to a slice with mask, where it takes that slice's
    ``|phi|`` (the larger of its two neighbours'), so that interpolating towards it crosses 0 at the
    slab's face: the end slices keep the extent nearest neighbour gives them. An empty mask gives +inf.
    """
    mask = np.asarray(mask) != 0
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    axis = int(np.argmax(spacing))
    inplane = tuple(float(s) for i, s in enumerate(spacing) if i != axis)
    slices = np.moveaxis(mask, axis, 0)
    filled = slices.reshape(len(slices), -1).any(axis=1)
    far = float(np.hypot(*(np.asarray(slices.shape[1:]) * inplane))) + 1.0  # beyond any in-plane distance
    phi = np.full(slices.shape, far, np.float32)
    for k in np.flatnonzero(filled):
        phi[k] = np.clip(signed_distance(slices[k], inplane), -far, far)  # a slice all mask: -inf, clipped
    for k in np.flatnonzero(~filled):
        beside = [n for n in (k - 1, k + 1) if 0 <= n < len(slices) and filled[n]]
        if beside:
            phi[k] = np.max([np.abs(phi[n]) for n in beside], axis=0)
    return np.moveaxis(phi, 0, axis)


def sample_mask(mask: np.ndarray, spacing: Spacing, scale, offset, output_shape, method: str = "nearest") -> np.ndarray:
    """The binary ``mask`` (voxels ``spacing`` mm) sampled at input indices ``scale * o + offset`` for
    every output index ``o`` of ``output_shape`` (``scale``: one factor per axis, or a 3x3 matrix for a
    turned grid, ``scale @ o + offset``); uint8 0/1. Everything outside the array is background.

    ``offset`` is in indices of ``mask`` itself; the padding that the methods need is added here.
    """
    check_method(method)
    pad = PAD[method]
    padded = np.pad(np.asarray(mask) != 0, pad)
    scale = np.asarray(scale, dtype=float)
    offset = np.asarray(offset, dtype=float) + pad
    shape = tuple(int(n) for n in output_shape)
    if method == "nearest":
        out = ndimage.affine_transform(padded.astype(np.uint8), scale, offset=offset, output_shape=shape, order=0, mode="constant", cval=0)
        return out.astype(np.uint8)
    if method == "linear":
        values = ndimage.affine_transform(padded.astype(np.float32), scale, offset=offset, output_shape=shape, order=1, mode="constant", cval=0.0)
        return (values >= 0.5).astype(np.uint8)
    phi = signed_distance(padded, spacing) if method == "distance" else slice_signed_distance(padded, spacing)
    if not np.isfinite(phi).all():  # no surface (empty mask): nothing to interpolate
        return np.zeros(shape, np.uint8)
    # Beyond the padded box: far outside. (cval must be finite: scipy mixes it into no sample, but a
    # NaN/inf there would poison the spline prefilter of other orders.)
    far = float(phi.max()) + 1.0
    values = ndimage.affine_transform(phi, scale, offset=offset, output_shape=shape, order=1, mode="constant", cval=far)
    return (values < 0).astype(np.uint8)


def resample_mask(mask: np.ndarray, spacing: Spacing, target_spacing: Spacing, method: str = "nearest") -> np.ndarray:
    """A binary mask resampled from ``spacing`` to ``target_spacing`` over the same physical extent.

    The first output voxel's corner sits at the first input voxel's corner (a voxel is a box), and the
    output has ``ceil(extent / target)`` voxels per axis. Returns uint8 0/1.
    """
    mask = np.asarray(mask)
    src = np.asarray(spacing, dtype=float)
    dst = np.asarray(target_spacing, dtype=float)
    extent = np.asarray(mask.shape) * src
    shape = np.maximum(1, np.ceil(extent / dst - 1e-9)).astype(int)
    # Output centre o lies at (o + 1/2) dst mm from the corner; input centre i at (i + 1/2) src.
    scale = dst / src
    offset = (dst / 2.0) / src - 0.5
    return sample_mask(mask, spacing, scale, offset, shape, method)
