"""Radiological gradings (SPIDER's ``radiological_gradings.csv``) and the one join of a grade to a disc.

A disc is joined to a grade by ``(patient_id, level)``, level 1 being the lowest disc (SPIDER's
``IVD label``). Every command that puts ``disc_narrowing`` into a table goes through ``join_narrowing``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import DiscConfig
from ..schema import LABEL_COLUMN

GRADINGS_COLUMNS = {
    "Patient": "patient_id",
    "IVD label": "level",
    "Modic": "modic",
    "UP endplate": "up_endplate",
    "LOW endplate": "low_endplate",
    "Spondylolisthesis": "spondylolisthesis",
    "Disc herniation": "disc_herniation",
    "Disc narrowing": LABEL_COLUMN,
    "Disc bulging": "disc_bulging",
    "Pfirrman grade": "pfirrmann_grade",  # SPIDER spells it "Pfirrman"
}


def read_gradings(path: str | Path) -> pd.DataFrame:
    """SPIDER's radiological_gradings.csv with snake-case columns; ``patient_id`` as a string.

    Rows with ``IVD label`` 0 (two patients in SPIDER) are kept here; they match no disc level.
    """
    gradings = pd.read_csv(path)
    missing = set(GRADINGS_COLUMNS) - set(gradings.columns)
    if missing:
        raise ValueError(f"{path}: not a SPIDER gradings file, missing columns {sorted(missing)}")
    gradings = gradings.rename(columns=GRADINGS_COLUMNS)
    gradings["patient_id"] = gradings["patient_id"].astype(str)
    gradings["level"] = gradings["level"].astype(int)
    return gradings


def narrowing_labels(gradings: pd.DataFrame) -> pd.DataFrame:
    """``patient_id, level, disc_narrowing`` for every graded disc with a real level (>= 1)."""
    labels = gradings.loc[gradings["level"] >= 1, ["patient_id", "level", LABEL_COLUMN]]
    return labels.drop_duplicates(["patient_id", "level"]).reset_index(drop=True)


def load_narrowing(path: str | Path | None) -> pd.DataFrame | None:
    """``narrowing_labels`` of a gradings file, or None when there is no file at ``path``."""
    return narrowing_labels(read_gradings(path)) if path is not None and Path(path).is_file() else None


def join_narrowing(discs: pd.DataFrame, labels: pd.DataFrame | None, min_level_confidence: float = DiscConfig().min_level_confidence) -> pd.Series:
    """The ``disc_narrowing`` grade of each row of ``discs`` (by ``patient_id, level``), null when ungraded.

    ``labels`` holds ``patient_id, level, disc_narrowing`` (``narrowing_labels``), one row per disc;
    None gives an all-null column. The result is aligned with ``discs``' index. A disc whose
    ``level_confidence`` is below ``min_level_confidence`` gets no grade: joined by a doubtful level it
    would carry another disc's (pass 0 when the user vouches for the numbering).
    """
    if labels is None or not len(discs):
        return pd.Series(pd.array([None] * len(discs), dtype="Int8"), index=discs.index, name=LABEL_COLUMN)
    labels = labels[["patient_id", "level", LABEL_COLUMN]].astype({"patient_id": str, "level": int})
    keys = pd.DataFrame({"patient_id": discs["patient_id"].astype(str).to_numpy(), "level": discs["level"].astype(int).to_numpy()})
    joined = keys.merge(labels, on=["patient_id", "level"], how="left", validate="many_to_one")
    grades = pd.Series(joined[LABEL_COLUMN].astype("Int8").to_numpy(), index=discs.index, name=LABEL_COLUMN)
    if "level_confidence" in discs:
        grades[discs["level_confidence"].fillna(1.0).to_numpy() < min_level_confidence] = pd.NA
    return grades
