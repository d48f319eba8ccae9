"""Label conventions, table columns and their Arrow schemas: defined here once, used everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# --- SPIDER mask labels (van der Graaf et al. 2024) -------------------------------------------------
# Vertebrae 1..25 from the bottom (L5 = 1), spinal canal 100, partly visible vertebrae 101..125,
# discs 201..225 from the bottom (L5/S1 = 201). A disc's level is its number from the bottom.
VERTEBRA_LABELS = range(1, 26)
CANAL_LABEL = 100
DISC_LABEL_OFFSET = 200
MAX_DISC_LEVEL = 25


def disc_label(level: int) -> int:
    return DISC_LABEL_OFFSET + level


def disc_level(label: int) -> int:
    return label - DISC_LABEL_OFFSET


def is_disc_label(labels: np.ndarray) -> np.ndarray:
    """Boolean array: which values are SPIDER disc labels (201..225)."""
    labels = np.asarray(labels)
    return (labels > DISC_LABEL_OFFSET) & (labels <= DISC_LABEL_OFFSET + MAX_DISC_LEVEL)


# --- statuses ------------------------------------------------------------------------------------
# Per scan (scans.parquet) and per disc (discs.parquet). Bad input is a status, never a crash.
class ScanStatus:
    OK = "ok"
    UNREADABLE = "unreadable"  # not an image file SimpleITK can read, truncated, missing data file
    BAD_HEADER = "bad_header"  # not 3-D, absurd size, bad spacing or direction
    BAD_VOXELS = "bad_voxels"  # no finite voxels, constant image
    BAD_ID = "bad_id"  # scan id unusable as a storage key, or duplicated
    GRID_MISMATCH = "grid_mismatch"  # image and mask grids disagree
    BAD_LABELS = "bad_labels"  # mask labels that do not fit the label scheme it is read with (io.labels)
    NO_DISCS = "no_discs"
    # Measured, but the numbering of its discs is doubtful (a transitional level, a merged or missed
    # disc): each disc's level_confidence says which; those below DiscConfig.min_level_confidence are
    # joined to no narrowing grade unless DiscConfig.join_uncertain_levels.
    LEVEL_UNCERTAIN = "level_uncertain"
    ERROR = "error"  # an exception while scoring this scan (its stage and type in error_stage, error_type)


class DiscStatus:
    OK = "ok"
    TOO_LARGE = "too_large"  # does not fit the crop: reported, never cut
    POSSIBLY_MERGED = "possibly_merged"  # a component much larger than its neighbours: two discs touching?
    FRAGMENTS_DROPPED = "fragments_dropped"  # measured, but small pieces of the label were dropped
    TOO_SMALL = "too_small"  # a disc label below DiscConfig.min_fragment_mm3 altogether: reported, not measured


# Discs whose crop holds one whole disc and whose geometry can be trusted: what the autoencoder trains
# on, what is classified and interpreted. "fragments_dropped" discs were measured on their main piece;
# "possibly merged" crops may hold two discs, "too large" ones have none.
USABLE_DISC_STATUSES = (DiscStatus.OK, DiscStatus.FRAGMENTS_DROPPED)


# --- columns --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeometryColumn:
    name: str
    unit: str
    # In the paper's geometric feature set (Table 1). Volume is in the table but not a feature: it is
    # nearly height x widths and was not among the paper's measurements.
    paper_feature: bool = True


# The disc geometry ``measure.geometry.measure_disc`` returns, in table order. Every consumer (the
# tables' schemas, the report's grid of plots, the classifier's feature set, synth's truth table)
# reads this tuple when it runs, so a new measurement is one entry here plus its code and test.
GEOMETRY = (
    GeometryColumn("height_mm", "mm"),
    GeometryColumn("ap_width_mm", "mm"),
    GeometryColumn("lateral_width_mm", "mm"),
    GeometryColumn("sagittal_angle_deg", "deg"),
    GeometryColumn("transverse_angle_deg", "deg"),
    GeometryColumn("coronal_angle_deg", "deg"),
    GeometryColumn("volume_mm3", "mm3", paper_feature=False),
)


def geometry_columns() -> list[str]:
    return [c.name for c in GEOMETRY]


def geometric_features() -> list[str]:
    """The geometric feature set of the paper's Table 1 (height, two widths, three angles)."""
    return [c.name for c in GEOMETRY if c.paper_feature]


LABEL_COLUMN = "disc_narrowing"


def latent_columns(k: int) -> list[str]:
    return [f"z{i}" for i in range(k)]


def latent_columns_of(columns) -> list[str]:
    """The latent columns present in a table, in numeric order."""
    found = [c for c in columns if c.startswith("z") and c[1:].isdigit()]
    return sorted(found, key=lambda c: int(c[1:]))


def _geometry_fields() -> list[pa.Field]:
    return [pa.field(c.name, pa.float64(), metadata={"unit": c.unit}) for c in GEOMETRY]


def discs_schema(latent_dim: int = 0, metadata: dict[str, str] | None = None) -> pa.Schema:
    fields = [
        pa.field("scan_id", pa.string(), nullable=False),
        pa.field("patient_id", pa.string()),
        pa.field("site", pa.string()),
        pa.field("level", pa.int32(), nullable=False),
        # The disc's name, e.g. 'L4/L5'; in a spine with an extra or missing vertebra (L6, T13) the name the
        # segmenter gave it ('L6/S1' at level 1) and ``transitional`` true: levels always count from the bottom.
        pa.field("level_name", pa.string()),
        pa.field("transitional", pa.bool_()),
        pa.field("level_confidence", pa.float32()),  # 0..1, how sure the level is (1 for labelled masks)
        pa.field("status", pa.string(), nullable=False),
        pa.field("message", pa.string()),
        *_geometry_fields(),
        pa.field("crop_index", pa.int64()),  # the disc's row among its scan's crops (io.store.read_disc_crops), -1: none
        pa.field(LABEL_COLUMN, pa.int8()),  # from the gradings when known, else null
        *[pa.field(c, pa.float32()) for c in latent_columns(latent_dim)],
    ]
    return pa.schema(fields, metadata=metadata)


SCANS_SCHEMA = pa.schema(
    [
        pa.field("scan_id", pa.string(), nullable=False),
        pa.field("patient_id", pa.string()),
        pa.field("site", pa.string()),
        pa.field("path", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("message", pa.string()),
        pa.field("n_discs", pa.int32()),
        pa.field("seconds_load", pa.float64(), metadata={"unit": "s"}),
        pa.field("seconds_segment", pa.float64(), metadata={"unit": "s"}),
        pa.field("seconds_measure", pa.float64(), metadata={"unit": "s"}),
        pa.field("seconds_encode", pa.float64(), metadata={"unit": "s"}),
        pa.field("node_id", pa.string()),  # the Ray node that segmented the scan
        pa.field("error_stage", pa.string()),  # status "error": the stage that raised (load, segment, mask, ...)
        pa.field("error_type", pa.string()),  # status "error": the exception's type
    ]
)
