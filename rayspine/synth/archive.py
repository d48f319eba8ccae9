"""The demo archive: one synthetic patient at a time (pure), then the SPIDER layout on disk.

Patient ``p`` is drawn from ``default_rng([seed, 2, p])`` and assigned to site ``(p - 1) % sites``, so a
patient is the same whatever the number of patients. Files are written with fixed compression and no
timestamps, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import SimpleITK as sitk

from ..io.scans import write_scan
from ..io.store import write_parquet_atomic, write_text_atomic
from ..schema import LABEL_COLUMN, geometry_columns
from ..volume import Volume, from_sitk, to_sitk
from .anatomy import build_spine
from .imaging import SIZES, Site, draw_sites, render_image
from .raster import Grid, rasterise
from .spider_stats import (
    BINARY_GRADING_RATE,
    BULGING_RATE_GIVEN_NARROWING,
    GRADINGS_HEADER,
    MODIC_PROBS,
    OVERVIEW_COLUMNS,
    PFIRRMANN_PROBS_GIVEN_NARROWING,
)

def truth_columns() -> list[str]:
    """Columns of ``truth.parquet``: the discs table's ids, its geometry (from the schema) and the label."""
    return ["scan_id", "patient_id", "site", "level", *geometry_columns(), LABEL_COLUMN]


OUTPUTS = ("images", "masks", "overview.csv", "radiological_gradings.csv", "truth.parquet")


@dataclass(frozen=True)
class Patient:
    scan_id: str
    image: Volume  # stored orientation (the site's), uint16
    mask: Volume  # same grid, uint8 SPIDER labels
    truth: list[dict]
    overview: dict
    gradings: list[dict]


def synthesize_patient(seed: int, patient: int, site: Site, size: str = "full", variant: str = "plain") -> Patient:
    """One patient's scan, mask, ground truth and metadata rows (no files); ``variant`` as in
    ``anatomy.VARIANTS`` (a decoy is drawn in the image, never labelled in the mask)."""
    preset = SIZES[size]
    rng = np.random.default_rng([seed, 2, patient])
    table_offset = rng.uniform([-10, -20, -40], [10, 20, 40])  # where the patient lies in the scanner
    spine = build_spine(rng, preset.n_discs, base=table_offset, variant=variant)
    grid = _field_of_view(spine, table_offset, site, preset)
    labels, tissue = rasterise(grid, spine.solids)
    image = render_image(rng, tissue, site)
    canonical = Volume(image, site.spacing, tuple(float(o) for o in grid.origin))
    image_vol = _stored(canonical, site.orientation)
    mask_vol = _stored(canonical.with_voxels(labels), site.orientation)

    pid, scan_id = str(patient), f"{patient}_t1"
    truth = [{"scan_id": scan_id, "patient_id": pid, "site": site.name, **d} for d in spine.discs]
    overview = {
        "new_file_name": scan_id,
        "num_vertebrae": int(len(np.intersect1d(np.unique(labels), np.arange(1, 26)))),
        "num_discs": len(truth),
        "sex": "F" if rng.random() < 0.62 else "M",  # SPIDER: 62% F
        "birth_date": "",
        "subset": "training" if rng.random() < 0.8 else "validation",
        **site.acquisition,
        "site": site.name,
    }
    return Patient(scan_id, image_vol, mask_vol, truth, overview, _gradings(rng, pid, truth))


def _field_of_view(spine, base: np.ndarray, site: Site, preset) -> Grid:
    """The site's nominal field of view around the spine, grown where a disc would stick out."""
    discs = [s for s in spine.solids if s.label > 200]
    centres = np.array([d.centre for d in discs])
    lr, ap, si = preset.fov_mm
    centre_x, centre_y = centres[:, 0].mean(), centres[:, 1].mean() + 0.15 * ap  # canal and arches behind
    low = np.array([centre_x - lr / 2, centre_y - ap / 2, base[2] - preset.below_sacrum_mm])
    high = low + np.array([lr, ap, si])
    disc_low = np.min([d.centre - d.extent() for d in discs], axis=0) - 4.0
    disc_high = np.max([d.centre + d.extent() for d in discs], axis=0) + 4.0
    return Grid.covering(np.minimum(low, disc_low), np.maximum(high, disc_high), site.spacing)


def _stored(volume: Volume, orientation: str) -> Volume:
    """The canonical LPS volume as the site's scanner stores it (axes permuted/flipped, no resampling)."""
    if orientation == "LPS":
        return volume
    return from_sitk(sitk.DICOMOrient(to_sitk(volume), orientation))


def _gradings(rng: np.random.Generator, patient_id: str, truth: list[dict]) -> list[dict]:
    rows = []
    for disc in truth:
        narrowed = disc["disc_narrowing"]
        row = {"Patient": int(patient_id), "IVD label": disc["level"]}
        row["Modic"] = int(rng.choice(list(MODIC_PROBS), p=list(MODIC_PROBS.values())))
        for name in ("UP endplate", "LOW endplate", "Spondylolisthesis", "Disc herniation"):
            row[name] = int(rng.random() < BINARY_GRADING_RATE[name])
        row["Disc narrowing"] = narrowed
        row["Disc bulging"] = int(rng.random() < BULGING_RATE_GIVEN_NARROWING[narrowed])
        probs = np.asarray(PFIRRMANN_PROBS_GIVEN_NARROWING[narrowed])
        row["Pfirrman grade"] = int(rng.choice(np.arange(1, 6), p=probs / probs.sum()))
        rows.append(row)
    return rows


def synthesize_archive(
    out: Path,
    patients: int = 24,
    sites: int = 3,
    seed: int = 0,
    size: str = "full",
    overwrite: bool = False,
) -> pd.DataFrame:
    """Write a SPIDER-layout archive to ``out``; return the truth table (also ``out/truth.parquet``)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    if patients < 1 or sites < 1 or seed < 0:
        raise ValueError("patients and sites must be >= 1 and seed >= 0")
    out = Path(out)
    _prepare(out, overwrite)
    site_list = draw_sites(seed, sites, size)
    truth, overview, gradings = [], [], []
    for patient in range(1, patients + 1):
        p = synthesize_patient(seed, patient, site_list[(patient - 1) % sites], size)
        write_scan(p.image, out / "images" / f"{p.scan_id}.mha")
        write_scan(p.mask, out / "masks" / f"{p.scan_id}.mha")
        truth += p.truth
        overview.append(p.overview)
        gradings += p.gradings
    truth_df = pd.DataFrame(truth, columns=truth_columns())
    truth_df["level"] = truth_df["level"].astype("int32")
    truth_df["disc_narrowing"] = truth_df["disc_narrowing"].astype("int8")
    overview_df = pd.DataFrame(overview, columns=[*OVERVIEW_COLUMNS, "site"])
    gradings_df = pd.DataFrame(gradings, columns=GRADINGS_HEADER)
    write_text_atomic(overview_df.to_csv(index=False), out / "overview.csv")
    write_text_atomic(gradings_df.to_csv(index=False), out / "radiological_gradings.csv")
    write_parquet_atomic(pa.Table.from_pandas(truth_df, preserve_index=False), out / "truth.parquet")
    return truth_df


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace the demo archive")
        for name in OUTPUTS:  # only what this function writes; anything else in OUT is left alone
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)

