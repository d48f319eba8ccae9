"""rayspine: disc masks, standard disc geometry and latent shape features from lumbar-spine MRI
(Perrone et al., Ann Biomed Eng 2025), on a laptop or a Ray cluster.

The Python API, for notebooks (each name is imported on first use, so ``import rayspine`` is instant)::

    import rayspine
    index = rayspine.index_archive("spider/")                  # one row per scan: ids, site, paths, status
    mask = rayspine.read_scan(index.mask_path[0])               # a Volume: voxels [x, y, z], spacing, origin, direction
    scan = rayspine.measure_mask(mask)                          # discs, 64^3 crops and geometry of one mask
    model = rayspine.load_autoencoder("sweep/")                 # a trained autoencoder (its default bottleneck)
    codes = model.encode(scan.crops); shapes = model.decode(codes)
    results, oof = rayspine.cross_validate(rayspine.labelled_discs(discs_table), rayspine.Config().cv)

Every command of the ``rayspine`` CLI is also a function: ``run_measure``, ``run_sweep``,
``train_segmenter``, ``run_pipeline``, ``run_cv``, ``run_interpret``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it
_API = {
    "Config": "rayspine.config",
    "Volume": "rayspine.volume",
    "index_archive": "rayspine.io.archive",
    "read_scan": "rayspine.io.scans",
    "write_scan": "rayspine.io.scans",
    "read_gradings": "rayspine.io.gradings",
    "measure_mask": "rayspine.measure.scan",
    "measure_disc": "rayspine.measure.geometry",
    "load_autoencoder": "rayspine.autoencode.infer",
    "Segmenter": "rayspine.segment.infer",
    "labelled_discs": "rayspine.predict.cv",
    "cross_validate": "rayspine.predict.cv",
    "run_measure": "rayspine.measure.command",
    "run_sweep": "rayspine.autoencode.sweep",
    "train_segmenter": "rayspine.segment.command",
    "run_pipeline": "rayspine.pipeline.graph",
    "run_cv": "rayspine.predict.command",
    "run_interpret": "rayspine.interpret.command",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'rayspine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
