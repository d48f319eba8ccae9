"""The demo archive: a SPIDER-layout, multi-site synthetic lumbar MRI study with exact ground truth.

``synthesize_archive(out, patients, sites, seed, size)`` writes ``images/<id>_t1.mha``,
``masks/<id>_t1.mha``, ``overview.csv``, ``radiological_gradings.csv`` and ``truth.parquet``.
Modules: ``spider_stats`` (what is borrowed from the real SPIDER metadata), ``anatomy`` (the spine as
analytic solids), ``raster`` (solids to voxels), ``imaging`` (sites, contrast, noise, bias), ``archive``
(patients and files).
"""

from .archive import synthesize_archive, synthesize_patient, truth_columns

__all__ = ["synthesize_archive", "synthesize_patient", "truth_columns"]
